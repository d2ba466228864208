"""Fetching every source: download, verify, record, and the start-up hook of a Space."""

from __future__ import annotations

import datetime as _dt
import json
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.errors import ConfigError, TacoError, printable
from app.fetch.downloaders import Downloader, default_downloader
from app.fetch.manifest import read_manifest, write_manifest
from app.fetch.sources import RemoteFile, Source, SourceUnreachable, load_sources
from app.fetch.verify import verify_checkpoint
from app.hashing import sha256_file
from app.settings import Settings, get_settings

EXIT_OK = 0
EXIT_FAILED = 2


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
                against = verify_checkpoint(final, source.verify, item.name)
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
            against = verify_checkpoint(part, source.verify, item.name)
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
        write_manifest(settings, manifest)  # after each file: an interrupted run keeps its work


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


one_line = printable


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
    manifest = read_manifest(settings)
    before = json.dumps(manifest, sort_keys=True)
    for source in sources:
        if source.kind == "hf":
            _fetch_hf(source, settings, manifest, quiet, report, say)
            continue
        if downloader is None:
            chosen = default_downloader(source)
        elif callable(downloader) and not hasattr(downloader, "download"):
            chosen = downloader(source)
        else:
            chosen = downloader  # type: ignore[assignment]
        _fetch_checkpoints(source, settings, manifest, chosen, quiet, report, say)
    if json.dumps(manifest, sort_keys=True) != before:
        write_manifest(settings, manifest)
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
