"""The example images shipped in `assets/`."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from app.settings import get_settings
from app.ui.defaults import assets_dir, max_side
from app.ui.model_sets import ModelSet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    path: Path
    caption: str
    label: str


def load_examples(folder: Path | None = None) -> list[Example]:
    """The example photos with their hand-written captions (assets/captions.json)."""
    folder = folder or assets_dir()
    meta = folder / "captions.json"
    if not meta.is_file():
        return []
    try:
        items = json.loads(meta.read_text()).get("examples", [])
    except (OSError, ValueError):
        log.warning("cannot read %s", meta)
        return []
    out = []
    for item in items:
        p = folder / str(item.get("file", ""))
        if p.is_file():
            out.append(Example(p, str(item.get("caption", "")), str(item.get("label", p.stem))))
    return out


def examples_cache_tag(sets: Mapping[str, ModelSet], checkpoint_dir: Path | None = None) -> str:
    """A folder name that changes when the models change, so cached example outputs never go stale."""
    h = hashlib.sha1()
    for model_set in sets.values():
        key = (model_set.label, model_set.taco, model_set.elic, model_set.allow_random)
        h.update(repr(key).encode())
    ckpt = checkpoint_dir or get_settings().checkpoint_dir
    for p in sorted(ckpt.glob("*.safetensors")) + sorted(ckpt.glob("manifest.json")):
        try:
            st = p.stat()
            h.update(f"{p.name}:{st.st_size}:{int(st.st_mtime)}".encode())
        except OSError:
            continue
    h.update(f"max_side={max_side()}".encode())
    return "taco-" + h.hexdigest()[:12]
