"""The example images shipped in `assets/`, and how the page's gr.Examples runs and caches them."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from app.settings import get_settings
from app.ui.defaults import DEFAULT_RATE, DEFAULT_TARGET_BPP, assets_dir, max_side
from app.ui.model_sets import ModelSet
from app.ui.present import DEFAULT_VIEW

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


@contextlib.contextmanager
def examples_cache_dir(tag: str) -> Iterator[None]:
    """Cache example outputs under a per-model folder, so a model change never shows stale ones.

    ``GRADIO_EXAMPLES_CACHE`` is Gradio's own variable (read when examples are built): it is set
    for the duration of the block and restored after.
    """
    key = "GRADIO_EXAMPLES_CACHE"
    old = os.environ.get(key)
    base = Path(old) if old else Path(".gradio") / "cached_examples"
    os.environ[key] = str(base / tag)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def example_values(ex: Example, model_set: str) -> list[Any]:
    """An example as the comparison's inputs (COMPARE_FIELDS order): its own caption, defaults."""
    return [str(ex.path), ex.caption, DEFAULT_RATE, False, DEFAULT_TARGET_BPP, model_set, True,
            DEFAULT_VIEW, "standard"]


def examples_fn(compare: Callable[..., tuple]) -> Callable[..., tuple]:
    def run_example(
        image: str,
        caption: str,
        rate: float,
        use_target: bool,
        target_bpp: float,
        model_set: str,
        rate_matched: bool,
        view: str,
        lpips_conv: str,
    ) -> tuple:
        return compare(
            image,
            caption,
            rate,
            use_target,
            target_bpp,
            model_set,
            rate_matched,
            view,
            lpips_conv,
            progress=gr.Progress(),
        )

    return run_example
