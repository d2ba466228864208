"""What `fetch-official` fetches: the sources file (data) and its records."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from app.errors import ConfigError, TacoError

#: The shipped sources file.
DEFAULT_SOURCES = Path(__file__).with_name("sources.json")


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
