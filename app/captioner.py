"""Optional auto-caption with BLIP (`Salesforce/blip-image-captioning-base`) through transformers.

The captioner's weights are not obtainable offline (no package registry ships them), so the app's
default is a user-typed caption. When the weights are present — a folder from `model_dir` or
`$TACO_BLIP_DIR`, or the Hugging Face cache — or when the hub is reachable and offline mode is off,
`caption_image` writes an unconditional caption. Otherwise it raises `MissingModelError` with one
line saying what is missing and how to get it, without waiting on the network.

`captioner_available()` is the UI's cheap check (it never loads the model).
"""

from __future__ import annotations

import functools
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.errors import CaptionError, ImageInputError, MissingModelError
from app.hub import hf_cache_dir, hub_reachable, offline_mode, quiet_loading
from app.settings import get_settings
from app.text import clean_caption

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["BLIP_HUB_ID", "caption_image", "captioner_available", "clear_captioner_cache"]

BLIP_HUB_ID = "Salesforce/blip-image-captioning-base"
ENV_BLIP_DIR = "TACO_BLIP_DIR"
DEFAULT_MAX_NEW_TOKENS = 30
DEFAULT_NUM_BEAMS = 3

_LABEL = "BLIP captioner"
_HINT_HUB = (
    f"download it (`hf download {BLIP_HUB_ID}`) or set {ENV_BLIP_DIR} to a local copy; "
    "or type a caption"
)
_HINT_DIR = (
    f"point {ENV_BLIP_DIR} (or model_dir) at a folder made by "
    f"`hf download {BLIP_HUB_ID} --local-dir DIR`; or type a caption"
)
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")

_generate_lock = threading.Lock()


def _folder_problem(folder: Path) -> str | None:
    """Why `folder` cannot hold a saved BLIP captioner, or None when it looks complete."""
    if not folder.is_dir():
        return "does not exist"
    if not (folder / "config.json").is_file():
        return "has no config.json"
    if not any((folder / name).is_file() for name in _WEIGHT_FILES):
        return "has no model weights"
    if not any((folder / name).is_file() for name in _PROCESSOR_FILES):
        return "has no processor config"
    return None


def _resolve(model_dir: str | os.PathLike[str] | None) -> tuple[str, bool]:
    """(source, local_only): an explicit folder, else the hub id (local-only when offline)."""
    folder = model_dir if model_dir is not None else get_settings().blip_dir
    if folder is not None:
        path = Path(folder).expanduser().resolve()
        problem = _folder_problem(path)
        if problem is not None:
            raise MissingModelError(f"{_LABEL} folder '{path}' {problem}; {_HINT_DIR}")
        return str(path), True
    return BLIP_HUB_ID, not hub_reachable()


def _in_hf_cache(repo_id: str) -> bool:
    """Whether the hub cache holds a config and weights for `repo_id` (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on it
        return False
    cache = hf_cache_dir()

    def cached(name: str) -> bool:
        return isinstance(try_to_load_from_cache(repo_id, name, cache_dir=cache), str)

    return cached("config.json") and any(cached(name) for name in _WEIGHT_FILES)


def captioner_available(model_dir: str | os.PathLike[str] | None = None) -> tuple[bool, str]:
    """Cheap check for the UI: (usable, one-line explanation). Loads nothing.

    Usable when a complete local folder is configured, when the Hugging Face cache holds the
    model, or when the hub is reachable (first use then downloads about 1 GB).
    """
    folder = model_dir if model_dir is not None else get_settings().blip_dir
    if folder is not None:
        path = Path(folder).expanduser()
        problem = _folder_problem(path)
        if problem is None:
            return True, f"{_LABEL} ready from {path}"
        return False, f"{_LABEL} folder '{path}' {problem}; {_HINT_DIR}"
    if _in_hf_cache(BLIP_HUB_ID):
        return True, f"{_LABEL} ready from the Hugging Face cache ({BLIP_HUB_ID})"
    if hub_reachable():
        return True, f"{_LABEL} will download {BLIP_HUB_ID} (about 1 GB) on first use"
    why = "offline mode" if offline_mode() else "hub unreachable"
    return False, f"{_LABEL} '{BLIP_HUB_ID}' not available ({why}); {_HINT_HUB}"


@functools.lru_cache(maxsize=2)
def _load(source: str, local_only: bool, cache_dir: str | None) -> tuple[Any, Any]:
    """(processor, model) for `source`; cached. Raises MissingModelError (one line)."""
    import torch
    from transformers import BlipForConditionalGeneration, BlipProcessor

    kwargs: dict[str, Any] = {"local_files_only": local_only}
    if cache_dir is not None:
        kwargs["cache_dir"] = cache_dir
    try:
        with quiet_loading(local_only or Path(source).is_dir()):
            processor = BlipProcessor.from_pretrained(source, **kwargs)
            model = BlipForConditionalGeneration.from_pretrained(source, dtype=torch.float32,
                                                                 **kwargs)
    except Exception as err:  # OSError, ValueError, hub errors: all mean "not usable here"
        if Path(source).is_dir():
            msg = f"{_LABEL} folder '{source}' could not be loaded ({type(err).__name__}); {_HINT_DIR}"
        else:
            where = " (offline)" if local_only else ""
            msg = f"{_LABEL} '{source}' not found locally{where}; {_HINT_HUB}"
        raise MissingModelError(msg) from err
    model = model.float().eval()
    model.requires_grad_(False)
    return processor, model


def clear_captioner_cache() -> None:
    """Forget loaded captioners (tests, or after new weights were supplied)."""
    _load.cache_clear()


def caption_image(
    image: Image.Image,
    model_dir: str | os.PathLike[str] | None = None,
    *,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    num_beams: int = DEFAULT_NUM_BEAMS,
) -> str:
    """An unconditional BLIP caption for `image`, sanitised with `clean_caption`.

    Model source: `model_dir`, `$TACO_BLIP_DIR`, the Hugging Face cache, then the hub (only when
    reachable and not in offline mode). Generation: beam search with `num_beams` beams and at most
    `max_new_tokens` new tokens, no sampling (deterministic).

    Raises `MissingModelError` when no model can be had, `ImageInputError` for a non-image and
    `CaptionError` when the model produces no text.
    """
    from PIL import Image as PILImage

    if not isinstance(image, PILImage.Image):
        raise ImageInputError(f"Captioning needs a PIL image, not {type(image).__name__}.")
    if max_new_tokens < 1 or num_beams < 1:
        raise ValueError("max_new_tokens and num_beams must be at least 1")
    source, local_only = _resolve(model_dir)
    cache_dir = None if Path(source).is_dir() else hf_cache_dir()
    processor, model = _load(source, local_only, cache_dir)

    import torch

    rgb = image.convert("RGB")
    inputs = processor(images=rgb, return_tensors="pt")
    with _generate_lock, torch.no_grad():
        out = model.generate(
            pixel_values=inputs["pixel_values"].to(torch.float32),
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            do_sample=False,
        )
    text = clean_caption(processor.decode(out[0], skip_special_tokens=True))
    if not text:
        raise CaptionError("The captioner returned an empty caption; please type one.")
    return text
