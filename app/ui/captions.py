"""Caption tools: the token counter and automatic captions."""

from __future__ import annotations

import logging
from typing import Any

from PIL import Image

from app.errors import TacoError, first_line
from app.ui.backend import Backend, default_backend
from app.ui.compare import load_image
from app.ui.model_sets import ModelSet, pick_model_set

log = logging.getLogger(__name__)


def text_encoder_kind(model_set: ModelSet, backend: Backend) -> str:
    """The text encoder of the set's TACO model (loading it; a missing model raises TacoError)."""
    codec = backend.load_codec(model_set.taco, allow_random=model_set.allow_random)
    kind = codec.capabilities.text_encoder
    if kind is None:
        raise TacoError(f"{model_set.taco} reads no caption")
    return kind


_KIND_NAMES = {"minilm": "MiniLM (all-MiniLM-L6-v2)", "clip": "CLIP ViT-B/32 text tower"}


def caption_token_markdown(
    caption: str, model_set: ModelSet | str | None = None, backend: Backend | None = None
) -> str:
    """Token counter + truncation notice for the active text encoder."""
    backend = backend or default_backend()
    try:
        model_set = pick_model_set(model_set)
        text = backend.clean_caption(caption or "")
        kind = text_encoder_kind(model_set, backend)
        info = backend.token_info(kind, text)
    except TacoError as exc:
        return f"Token count unavailable: {exc}"
    enc = _KIND_NAMES.get(kind, kind)
    n, max_len = int(info.n_tokens), int(info.max_len)
    if not text:
        return (
            f"Empty caption: TACO will encode with no text · {enc}, window {max_len} tokens "
            "(special tokens included)"
        )
    if info.truncated:
        kept = str(info.kept_text)
        kept = kept if len(kept) <= 120 else kept[:117] + "…"
        return f"**{n} / {max_len} tokens: truncated.** The encoder only sees: “{kept}” · {enc}"
    return f"**{n} / {max_len} tokens** (special tokens included) · {enc}"


def auto_caption(image: Any, current: str = "", backend: Backend | None = None) -> tuple[str, str]:
    """(caption, message). When BLIP is unavailable the current caption is kept, and said so."""
    backend = backend or default_backend()
    ok, reason = backend.captioner_available()
    if not ok:
        return current, f"Auto-caption unavailable ({reason}); your caption is unchanged."
    try:
        arr, _, _ = load_image(image, backend)
        text = backend.caption_image(Image.fromarray(arr))
    except TacoError as exc:
        return current, f"Auto-caption failed: {first_line(exc)}; your caption is unchanged."
    text = backend.clean_caption(text)
    if not text:
        return current, "The captioner returned nothing; your caption is unchanged."
    return text, f"Caption written by BLIP: “{text}”. Edit it freely."
