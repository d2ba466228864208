"""``python -m app fetch-official``: download the paper's weights, verify them, record them.

What is fetched is data, in ``app/fetch_sources.json`` (``--sources`` reads another file):

- ``taco``: the authors' six ``lambda_*.pth.tar`` TACO checkpoints (a Google Drive folder linked
  from the official repository) into ``Settings.official_dir``, where the registry finds them.
- ``clip``: the CLIP ViT-B/32 text model into the Hugging Face cache (TACO's text encoder).
- ``elic-chandelier``: the six checkpoints of an unofficial ELIC re-implementation (no official
  ELIC weights exist) into ``<official_dir>/elic-chandelier/``, a folder the codec registry does
  not read; they are verified against ``compressai.models.Elic2022Chandelier`` only.

Every checkpoint is downloaded to a hidden ``.part`` name, loaded strictly into the model it is
meant for, and only then renamed to its final name. Its SHA-256 goes into
``<official_dir>/manifest.json`` on first fetch; later runs compare the file on disk with it and
download nothing when it matches. A file that fails either check is moved aside to
``<name>.rejected`` (never deleted) with a one-line error. A source that cannot be reached gives
one line saying so. The exit status is 0 when everything is in place, 2 otherwise.

Drive access goes through a :class:`Downloader`: :class:`GdownDownloader` (the real one) or
:class:`HttpDownloader` (a plain HTTP GET from a URL template, for mirrors and for the tests).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import socket
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from app.errors import ConfigError, TacoError
from app.hashing import sha256_file
from app.settings import Settings, get_settings

__all__ = [
    "DEFAULT_SOURCES",
    "MANIFEST_FORMAT",
    "Downloader",
    "FetchReport",
    "GdownDownloader",
    "HttpDownloader",
    "SourceUnreachable",
    "chandelier_to_compressai",
    "fetch",
    "fetch_on_startup",
    "load_sources",
    "main",
]

#: The shipped sources file.
DEFAULT_SOURCES = Path(__file__).with_name("fetch_sources.json")
#: ``format`` of ``<official_dir>/manifest.json``.
MANIFEST_FORMAT = "taco-demo-fetched/1"

EXIT_OK = 0
EXIT_FAILED = 2
_PROBE_TIMEOUT_S = 3.0
_CHUNK = 1 << 20


class SourceUnreachable(TacoError):
    """The host of a source did not answer (offline, DNS failure, connection refused)."""


class DownloadFailed(TacoError):
    """The host answered but the file could not be downloaded (404, quota, bad listing)."""


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteFile:
    """One file of a source: its final name and, when known, its Drive file id."""

    name: str
    file_id: str | None = None
    lmbda: float | None = None


@dataclass(frozen=True)
class Source:
    """One entry of the sources file (see ``app/fetch_sources.json``)."""

    name: str
    title: str
    kind: str  # "drive" | "http" | "hf"
    host: str
    host_label: str
    startup: bool = False
    folder_id: str | None = None
    url_template: str | None = None
    subdir: str = ""
    repo_id: str | None = None
    verify: dict[str, Any] = field(default_factory=dict)
    files: tuple[RemoteFile, ...] = ()
    provenance: dict[str, Any] = field(default_factory=dict)

    def unreachable_line(self) -> str:
        return f"{self.host_label} ({self.host}) is unreachable: could not fetch {self.title}"


_KINDS = ("drive", "http", "hf")


def _check_name(name: object, where: str) -> str:
    if not isinstance(name, str) or not name or Path(name).name != name or name.startswith("."):
        raise ConfigError(f"{where}: file name {name!r} must be a plain file name")
    return name


def load_sources(path: str | Path | None = None) -> list[Source]:
    """The sources of ``path`` (default: the shipped file); a malformed file raises ConfigError."""
    path = Path(path) if path is not None else DEFAULT_SOURCES
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read sources file {path.name}: {exc}") from None
    entries = data.get("sources") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ConfigError(f"{path.name}: expected {{\"sources\": [...]}}")
    out: list[Source] = []
    for i, raw in enumerate(entries):
        where = f"{path.name} source {i}"
        if not isinstance(raw, dict) or raw.get("kind") not in _KINDS:
            raise ConfigError(f"{where}: 'kind' must be one of {', '.join(_KINDS)}")
        kind = raw["kind"]
        host = raw.get("host") or urlparse(raw.get("url_template", "")).netloc
        files = tuple(
            RemoteFile(_check_name(f.get("name"), where), f.get("id"), f.get("lmbda"))
            for f in raw.get("files", [])
        )
        subdir = raw.get("subdir", "")
        if subdir and (Path(subdir).is_absolute() or ".." in Path(subdir).parts):
            raise ConfigError(f"{where}: subdir {subdir!r} must stay inside the official folder")
        src = Source(
            name=str(raw.get("name") or f"source{i}"),
            title=str(raw.get("title") or raw.get("name") or f"source {i}"),
            kind=kind,
            host=str(host),
            host_label=str(raw.get("host_label") or host),
            startup=bool(raw.get("startup", False)),
            folder_id=raw.get("folder_id"),
            url_template=raw.get("url_template"),
            subdir=subdir,
            repo_id=raw.get("repo_id"),
            verify=dict(raw.get("verify") or {}),
            files=files,
            provenance=dict(raw.get("provenance") or {}),
        )
        if kind == "http" and not src.url_template:
            raise ConfigError(f"{where}: an http source needs 'url_template'")
        if kind == "hf" and not src.repo_id:
            raise ConfigError(f"{where}: an hf source needs 'repo_id'")
        if kind == "drive":
            no_id = [f.name for f in files if not f.file_id]
            if no_id and not src.folder_id:
                raise ConfigError(f"{where}: {no_id[0]} has no Drive id and the source no folder_id")
        if kind != "hf" and not src.verify.get("kind"):
            raise ConfigError(f"{where}: checkpoints need a 'verify' entry")
        out.append(src)
    return out


# --------------------------------------------------------------------------------------------
# Downloaders
# --------------------------------------------------------------------------------------------


class Downloader(Protocol):
    """Fetches one file of a source to ``dest`` (the caller renames it once it is verified)."""

    def reachable(self, source: Source) -> bool:
        """Whether the source's host answers at all (a quick TCP connect)."""
        ...

    def download(self, source: Source, item: RemoteFile, dest: Path, quiet: bool) -> None:
        """Write ``item`` to ``dest``; SourceUnreachable / DownloadFailed when it cannot."""
        ...


def _probe(host: str, port: int, timeout: float = _PROBE_TIMEOUT_S) -> bool:
    """One TCP connect, bounded by ``timeout`` even when name resolution stalls."""
    result: list[bool] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=attempt, name="taco-fetch-probe", daemon=True)
    worker.start()
    worker.join(timeout + 0.5)
    return bool(result and result[0])


def _proxied() -> bool:
    return any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"))


class GdownDownloader:
    """Google Drive through ``gdown``: folder listing (for files without an id) and download.

    The folder is listed once per source with ``download_folder(skip_download=True)``, which
    returns each file's id; each file is then fetched by id with ``gdown.download`` (its own
    progress bar) to the caller's temporary name.
    """

    def __init__(self) -> None:
        self._listings: dict[str, dict[str, str]] = {}

    def reachable(self, source: Source) -> bool:
        return _proxied() or _probe(source.host, 443)

    def _file_id(self, source: Source, item: RemoteFile, quiet: bool) -> str:
        if item.file_id:
            return item.file_id
        assert source.folder_id is not None  # load_sources guarantees it
        listing = self._listings.get(source.folder_id)
        if listing is None:
            import gdown

            try:
                found = gdown.download_folder(
                    id=source.folder_id, quiet=quiet, skip_download=True
                )
            except OSError as exc:  # requests' ConnectionError is an OSError
                raise SourceUnreachable(source.unreachable_line()) from exc
            except Exception as exc:  # gdown's DownloadError, page-format changes
                raise DownloadFailed(
                    f"cannot list the Drive folder {source.folder_id}: {_first_line(exc)}"
                ) from None
            # skip_download=True returns GoogleDriveFileToDownload(id, path, local_path) tuples
            listing = {Path(f.path).name: f.id for f in found if not isinstance(f, str)}
            self._listings[source.folder_id] = listing
        if item.name not in listing:
            raise DownloadFailed(f"{item.name} is not in the Drive folder {source.folder_id}")
        return listing[item.name]

    def download(self, source: Source, item: RemoteFile, dest: Path, quiet: bool) -> None:
        import gdown

        file_id = self._file_id(source, item, quiet)
        try:
            gdown.download(id=file_id, output=str(dest), quiet=quiet)
        except OSError as exc:
            raise SourceUnreachable(source.unreachable_line()) from exc
        except Exception as exc:
            raise DownloadFailed(f"{item.name}: {_first_line(exc)}") from None
        if not dest.is_file():
            raise DownloadFailed(f"{item.name}: gdown wrote nothing")


class HttpDownloader:
    """A plain HTTP(S) GET of ``source.url_template`` formatted with ``name``, ``id``, ``folder``.

    Serves mirrors that hold the files under their final names, and the tests (a server on
    127.0.0.1). The progress bar is tqdm's.
    """

    def __init__(self, timeout: float = 30.0) -> None:
        self.timeout = timeout

    def reachable(self, source: Source) -> bool:
        url = urlparse(self._url(source, RemoteFile("probe")))
        port = url.port or (443 if url.scheme == "https" else 80)
        return _proxied() or _probe(url.hostname or source.host, port)

    @staticmethod
    def _url(source: Source, item: RemoteFile) -> str:
        assert source.url_template is not None
        return source.url_template.format(
            name=item.name, id=item.file_id or "", folder=source.folder_id or ""
        )

    def download(self, source: Source, item: RemoteFile, dest: Path, quiet: bool) -> None:
        from tqdm import tqdm

        url = self._url(source, item)
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as resp, open(dest, "wb") as out:
                total = int(resp.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=item.name,
                          disable=quiet, file=sys.stderr) as bar:
                    while chunk := resp.read(_CHUNK):
                        out.write(chunk)
                        bar.update(len(chunk))
        except urllib.error.HTTPError as exc:
            raise DownloadFailed(f"{item.name}: HTTP {exc.code} from {source.host}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise SourceUnreachable(source.unreachable_line()) from exc


def _default_downloader(source: Source) -> Downloader:
    return GdownDownloader() if source.kind == "drive" else HttpDownloader()


# --------------------------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------------------------


def _chandelier_target(key: str, groups: int) -> list[str]:
    """The Elic2022Chandelier key(s) for one key of the re-implementation's ``TestModel``."""
    head, _, rest = key.partition(".")
    if head in ("g_a", "g_s"):
        return [key]
    if head in ("h_a", "h_s", "entropy_bottleneck"):
        return [f"latent_codec.hyper.{key}"]
    index, _, tail = rest.partition(".")
    if head == "cc_transforms" and index.isdigit():
        # cc_transforms[i] predicts group i + 1 from group 0 and group i (ChannelGroups' y{i+1})
        return [f"latent_codec.y.channel_context.y{int(index) + 1}.{tail}"]
    if head == "context_prediction" and index.isdigit():
        return [f"latent_codec.y.latent_codec.y{index}.context_prediction.{tail}"]
    if head == "ParamAggregation" and index.isdigit():
        return [f"latent_codec.y.latent_codec.y{index}.entropy_parameters.{tail}"]
    if head == "gaussian_conditional":
        # one shared GaussianConditional there; compressai has one per channel group
        return [f"latent_codec.y.latent_codec.y{k}.y.{key}" for k in range(groups)]
    return [key]


def chandelier_to_compressai(state_dict: dict[str, Any], groups: int = 5) -> dict[str, Any]:
    """Rename a VincentChandelier/ELiC-ReImplemetation state_dict to Elic2022Chandelier's keys.

    Only names change: both concatenate the context-model inputs in the same order (spatial
    context, channel context means/scales, hyper means/scales; channel context from the first and
    the latest group), and their checkerboard masks are equal. ``module.`` prefixes (DataParallel)
    and compressai ≤ 1.2.6 entropy-bottleneck names (``_matrix0``) are mapped as well.
    """
    from app.models.factory import canonical_state_dict

    out: dict[str, Any] = {}
    for key, value in canonical_state_dict(state_dict).items():
        for target in _chandelier_target(key, groups):
            out[target] = value
    return out


def _read_state_dict(path: Path) -> dict[str, Any]:
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling problem means a bad file
        raise ConfigError(f"cannot read checkpoint {path.name}: {_first_line(exc)}") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise ConfigError(f"{path.name} holds no state_dict")
    return obj


def _verify_elic2022chandelier(path: Path, spec: dict[str, Any], name: str) -> None:
    from compressai.models import Elic2022Chandelier

    kwargs: dict[str, Any] = {"N": int(spec.get("N", 192)), "M": int(spec.get("M", 320))}
    if spec.get("groups"):
        kwargs["groups"] = [int(g) for g in spec["groups"]]
    model = Elic2022Chandelier(**kwargs)
    state = chandelier_to_compressai(_read_state_dict(path), len(model.groups))
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = [f"{len(missing)} missing (e.g. {missing[0]})"] if missing else []
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        shape = ", ".join(f"{k}={v}" for k, v in kwargs.items())
        raise ConfigError(f"{name} does not match Elic2022Chandelier({shape}): {'; '.join(parts)}")
    try:
        model.load_state_dict(state, strict=True)  # resizes the coder tables, then loads
    except RuntimeError as exc:
        raise ConfigError(f"{name} does not load into Elic2022Chandelier: {_first_line(exc)}") from None


def _verify(path: Path, spec: dict[str, Any], name: str) -> str:
    """Load ``path`` strictly into the model ``spec`` names; ConfigError (one line) if it fails.

    Returns what it was verified against, for the manifest.
    """
    kind = spec.get("kind")
    if kind == "official-config":
        from app.models.factory import load_official_checkpoint

        config = str(spec.get("config", "taco-official"))
        try:
            load_official_checkpoint(path, config)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace(path.name, name)) from None
        return f"app config {config}"
    if kind == "elic2022chandelier":
        _verify_elic2022chandelier(path, spec, name)
        return f"compressai Elic2022Chandelier(N={spec.get('N', 192)}, M={spec.get('M', 320)})"
    raise ConfigError(f"unknown verify kind {kind!r}")


# --------------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------------


def _manifest_path(settings: Settings) -> Path:
    return settings.official_dir / "manifest.json"


def _read_manifest(settings: Settings) -> dict[str, Any]:
    path = _manifest_path(settings)
    if not path.is_file():
        return {"format": MANIFEST_FORMAT, "files": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path.name}: {_first_line(exc)}") from None
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        raise ConfigError(f"{path.name} is not a fetch manifest")
    return data


def _write_manifest(settings: Settings, manifest: dict[str, Any]) -> None:
    path = _manifest_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# Fetching
# --------------------------------------------------------------------------------------------


@dataclass
class FetchReport:
    """What one run did: per-file outcomes and the one-line problems."""

    downloaded: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _set_aside(path: Path) -> Path:
    """Move ``path`` to ``<name>.rejected`` (replacing an older one) and return the new path."""
    aside = path.with_name(path.name.lstrip(".").removesuffix(".part") + ".rejected")
    os.replace(path, aside)
    return aside


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


def _fetch_checkpoints(source: Source, settings: Settings, manifest: dict[str, Any],
                       downloader: Downloader, quiet: bool, report: FetchReport,
                       say: Callable[[str], None]) -> None:
    folder = settings.official_dir / source.subdir if source.subdir else settings.official_dir
    entries: dict[str, Any] = manifest["files"]
    todo: list[RemoteFile] = []
    for item in source.files:
        key = f"{source.subdir}/{item.name}" if source.subdir else item.name
        final = folder / item.name
        if not final.is_file():
            todo.append(item)
            continue
        entry = entries.get(key)
        digest = sha256_file(final)
        if entry is None:  # dropped in by hand: verify it once, then record it
            try:
                against = _verify(final, source.verify, item.name)
            except TacoError as exc:
                aside = _set_aside(final)
                report.problems.append(f"{one_line(exc)}; moved to {aside.name}")
                continue
            entries[key] = _entry(source, item, final, digest, against)
            report.present.append(key)
        elif entry.get("sha256") == digest:
            report.present.append(key)
        else:
            aside = _set_aside(final)
            report.problems.append(
                f"{key}: sha256 {digest[:12]}… does not match the manifest's "
                f"{str(entry.get('sha256'))[:12]}…; moved to {aside.name} (run again to download it afresh)"
            )
    if not todo:
        return
    if not downloader.reachable(source):
        report.problems.append(source.unreachable_line())
        return
    folder.mkdir(parents=True, exist_ok=True)
    for item in todo:
        key = f"{source.subdir}/{item.name}" if source.subdir else item.name
        part = folder / f".{item.name}.part"
        say(f"fetching {key} from {source.host_label}")
        try:
            downloader.download(source, item, part, quiet)
        except SourceUnreachable:
            part.unlink(missing_ok=True)
            report.problems.append(source.unreachable_line())
            return
        except TacoError as exc:
            part.unlink(missing_ok=True)
            report.problems.append(one_line(exc))
            continue
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        try:
            against = _verify(part, source.verify, item.name)
        except TacoError as exc:
            aside = _set_aside(part)
            report.problems.append(f"{one_line(exc)}; refused, kept as {aside.name}")
            continue
        digest = sha256_file(part)
        pinned = entries.get(key, {}).get("sha256")
        if pinned and pinned != digest:
            aside = _set_aside(part)
            report.problems.append(
                f"{key}: the download's sha256 {digest[:12]}… differs from the manifest's "
                f"{pinned[:12]}… (the upstream file changed); refused, kept as {aside.name}"
            )
            continue
        os.replace(part, folder / item.name)
        entries[key] = _entry(source, item, folder / item.name, digest, against)
        report.downloaded.append(key)
        _write_manifest(settings, manifest)  # after each file: an interrupted run keeps its work


def _entry(source: Source, item: RemoteFile, path: Path, digest: str, against: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "sha256": digest,
        "size": path.stat().st_size,
        "source": source.name,
        "verified_against": against,
        "recorded": _now(),
        "provenance": source.provenance,
    }
    if item.file_id:
        entry["drive_id"] = item.file_id
    if source.folder_id:
        entry["drive_folder"] = source.folder_id
    if item.lmbda is not None:
        entry["lmbda"] = item.lmbda
    return entry


def _fetch_hf(source: Source, settings: Settings, manifest: dict[str, Any], quiet: bool,
              report: FetchReport, say: Callable[[str], None]) -> None:
    """The CLIP text model into the hub cache, through the loader TACO itself uses."""
    from app.hub import hub_reachable, quiet_loading

    assert source.repo_id is not None
    if source.repo_id != "openai/clip-vit-base-patch32":
        raise ConfigError(f"{source.name}: only the CLIP text model is fetched from the hub")
    from app.text import CLIPTextEncoder

    if settings.clip_dir is None and not hub_reachable():
        try:  # already in the cache: nothing to download
            with quiet_loading():
                CLIPTextEncoder().model  # noqa: B018 - loading the weights is the check
        except TacoError:
            report.problems.append(source.unreachable_line())
            return
        report.present.append(source.repo_id)
        return
    say(f"fetching {source.repo_id} from {source.host_label}")
    try:
        with quiet_loading(quiet):
            encoder = CLIPTextEncoder()
            encoder.model  # noqa: B018 - the first access downloads the weights
    except TacoError as exc:
        report.problems.append(one_line(exc))
        return
    manifest.setdefault("models", {})[source.name] = {
        "repo_id": source.repo_id,
        "where": "the Hugging Face cache" if settings.clip_dir is None else "TACO_CLIP_DIR",
        "recorded": _now(),
        "provenance": source.provenance,
    }
    report.present.append(source.repo_id)


def one_line(exc: BaseException | str) -> str:
    from app.cli import one_line as _one_line

    return _one_line(exc)


def fetch(
    sources: Iterable[Source] | None = None,
    *,
    settings: Settings | None = None,
    downloader: Downloader | Callable[[Source], Downloader] | None = None,
    quiet: bool = False,
    say: Callable[[str], None] | None = None,
) -> FetchReport:
    """Fetch and verify ``sources`` (default: all shipped ones); never raises for a bad source.

    ``downloader`` is one downloader for every checkpoint source, or a function of the source
    (default: gdown for ``drive`` sources, HTTP GET for ``http`` ones).
    """
    settings = settings or get_settings()
    sources = list(load_sources() if sources is None else sources)
    say = say or (lambda text: None if quiet else print(text, file=sys.stderr))
    report = FetchReport()
    manifest = _read_manifest(settings)
    before = json.dumps(manifest, sort_keys=True)
    for source in sources:
        if source.kind == "hf":
            _fetch_hf(source, settings, manifest, quiet, report, say)
            continue
        if downloader is None:
            chosen = _default_downloader(source)
        elif callable(downloader) and not hasattr(downloader, "download"):
            chosen = downloader(source)
        else:
            chosen = downloader  # type: ignore[assignment]
        _fetch_checkpoints(source, settings, manifest, chosen, quiet, report, say)
    if json.dumps(manifest, sort_keys=True) != before:
        _write_manifest(settings, manifest)
    return report


def fetch_on_startup(settings: Settings | None = None) -> FetchReport | None:
    """The ``TACO_FETCH_OFFICIAL=1`` start-up hook: fetch the sources marked ``startup``.

    Does nothing (returns None) when the setting is off. Never raises: problems are printed, one
    line each, to stderr, and the caller goes on with whatever models are present. It runs before
    the UI is built, so the "Official TACO" model set is offered on the same start.
    """
    settings = settings or get_settings()
    if not settings.fetch_official:
        return None
    try:
        chosen = [s for s in load_sources() if s.startup]
        report = fetch(chosen, settings=settings, quiet=True)
    except Exception as exc:  # noqa: BLE001 - the app must start on its embedded models anyway
        print(f"fetch-official: {type(exc).__name__}: {one_line(exc)}", file=sys.stderr)
        return None
    for line in report.problems:
        print(f"fetch-official: {line}", file=sys.stderr)
    return report


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m app fetch-official",
        description="Download the official TACO checkpoints, the CLIP text model and the ELIC "
        "re-implementation's checkpoints; verify them and record their sha256.",
    )
    p.add_argument("--only", help="comma-separated source names (default: all): "
                   "taco, clip, elic-chandelier")
    p.add_argument("--sources", help="a sources JSON file (default: the shipped one)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or progress lines")
    p.add_argument("--list", action="store_true", help="list the sources and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    sources = load_sources(args.sources)
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        unknown = [w for w in wanted if w not in {s.name for s in sources}]
        if unknown:
            raise ConfigError(f"unknown source {unknown[0]!r}; known: "
                              + ", ".join(s.name for s in sources))
        sources = [s for s in sources if s.name in wanted]
    if args.list:
        for s in sources:
            licence = s.provenance.get("licence", "unknown")
            print(f"{s.name}: {s.title} ({s.host}; {len(s.files) or 1} file(s); licence: {licence})")
        return EXIT_OK
    report = fetch(sources, quiet=args.quiet)
    for line in report.problems:
        print(f"error: {line}", file=sys.stderr)
    if not args.quiet:
        official = get_settings().official_dir
        print(f"{len(report.downloaded)} downloaded, {len(report.present)} already present "
              f"({official}); {len(report.problems)} problem(s)")
    return EXIT_OK if report.ok else EXIT_FAILED

