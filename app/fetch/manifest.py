"""``<official_dir>/manifest.json``: what was fetched, from where, and its SHA-256."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from app.errors import ConfigError, first_line
from app.settings import Settings

#: ``format`` of ``<official_dir>/manifest.json``.
MANIFEST_FORMAT = "taco-demo-fetched/1"


# --------------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------------


def manifest_path(settings: Settings) -> Path:
    return settings.official_dir / "manifest.json"


def read_manifest(settings: Settings) -> dict[str, Any]:
    path = manifest_path(settings)
    if not path.is_file():
        return {"format": MANIFEST_FORMAT, "files": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path.name}: {first_line(exc)}") from None
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        raise ConfigError(f"{path.name} is not a fetch manifest")
    return data


def write_manifest(settings: Settings, manifest: dict[str, Any]) -> None:
    path = manifest_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
