"""CLIP score: how well a caption matches an image, with open_clip ViT-B-32 (OpenAI weights).

Definition (the common "CLIPScore" scale, as in torchmetrics):

    clip_score = 100 * max(cos(E_img, E_txt), 0)

where E_img and E_txt are CLIP ViT-B/32's projected image and text embeddings (open_clip
`encode_image` / `encode_text`), the image preprocessed by the model's own eval transform (resize
to 224 on the short side, bicubic, centre crop, OpenAI mean/std) and the caption tokenised with
CLIP's BPE (77 tokens, truncated). The range is [0, 100]; well-matched pairs typically score about
25-35. (Hessel et al. 2021 use the weight 2.5 instead of 100; divide by 40 to compare.)

The weights are not obtainable offline (no package registry ships CLIP weights). Sources, first
match wins:

1. `model_dir` or `$TACO_OPENCLIP_DIR`: an open_clip folder (`open_clip_config.json` plus weights,
   as on the hub as `timm/vit_base_patch32_clip_224.openai`), a folder holding one weights file,
   or a weights file (open_clip state dict `.safetensors`/`.bin`, or OpenAI's `ViT-B-32.pt`).
2. Caches, without network: `~/.cache/clip/ViT-B-32.pt` (open_clip's and OpenAI's URL cache) and
   the Hugging Face cache of `timm/vit_base_patch32_clip_224.openai`.
3. A download through open_clip, only when offline mode is off and the hub answers a quick probe.

Otherwise `clip_score` returns `ClipScore(value=None, reason="n/a: ...")`; it never raises for
missing weights and never waits on the network.
"""

from __future__ import annotations

import functools
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.errors import MissingModelError
from app.hub import hf_cache_dir, hub_reachable, offline_mode
from app.settings import get_settings
from app.text import clean_caption

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

__all__ = ["ClipScore", "clip_score", "clipscore_available", "clear_clipscore_cache"]

ARCH = "ViT-B-32"
PRETRAINED_TAG = "openai"
HF_REPO = "timm/vit_base_patch32_clip_224.openai"
OPENAI_FILENAME = "ViT-B-32.pt"
ENV_DIR = "TACO_OPENCLIP_DIR"

_HF_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
_DIR_FILES = (*_HF_FILES, "open_clip_pytorch_model.safetensors", OPENAI_FILENAME)
_NA_MISSING = (
    f"n/a: CLIP {ARCH} weights not available offline; set {ENV_DIR} to a copy of "
    f"`hf download {HF_REPO}` (or OpenAI's {OPENAI_FILENAME})"
)

_score_lock = threading.Lock()


@dataclass(frozen=True)
class ClipScore:
    """value: 100·max(cos, 0) in [0, 100], or None when not computable; reason: one line."""

    value: float | None
    reason: str


@dataclass(frozen=True)
class _Source:
    kind: (
        str  # "local-dir" (open_clip folder), "state-dict" (open_clip file), "openai" (.pt), "hub"
    )
    path: str  # folder, file, or "" for the hub download


def _clip_url_cache() -> Path:
    return Path(os.path.expanduser("~/.cache/clip"))


def _file_source(path: Path) -> _Source:
    if path.suffix == ".pt":
        return _Source("openai", str(path))
    return _Source("state-dict", str(path))


def _explicit_source(location: str | os.PathLike[str]) -> _Source:
    path = Path(location).expanduser().resolve()
    if path.is_file():
        return _file_source(path)
    if path.is_dir():
        if (path / "open_clip_config.json").is_file():
            return _Source("local-dir", str(path))
        for name in _DIR_FILES:
            if (path / name).is_file():
                return _file_source(path / name)
        raise MissingModelError(
            f"n/a: no CLIP {ARCH} weights in '{path}' (expected open_clip_config.json + weights, "
            f"or one of {', '.join(_DIR_FILES)})"
        )
    raise MissingModelError(f"n/a: CLIP {ARCH} weights path '{path}' does not exist ({ENV_DIR})")


def _cached_source() -> _Source | None:
    """A source found in local caches, without any network access."""
    openai_file = _clip_url_cache() / OPENAI_FILENAME
    if openai_file.is_file():
        return _Source("openai", str(openai_file))
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - open_clip/transformers depend on it
        return None
    cache = hf_cache_dir()
    for name in _HF_FILES:
        hit = try_to_load_from_cache(HF_REPO, name, cache_dir=cache)
        if isinstance(hit, str):
            return _Source("state-dict", hit)
    return None


def _resolve(model_dir: str | os.PathLike[str] | None) -> _Source:
    """Where the weights come from; raises MissingModelError ("n/a: ...") when nowhere."""
    location = model_dir if model_dir is not None else get_settings().openclip_dir
    if location is not None:
        return _explicit_source(location)
    cached = _cached_source()
    if cached is not None:
        return cached
    if hub_reachable():
        return _Source("hub", "")
    raise MissingModelError(_NA_MISSING + (" (offline mode)" if offline_mode() else ""))


def _check_safetensors(path: str) -> None:
    """Read the safetensors header only; raises on a truncated or foreign file."""
    from safetensors import safe_open

    with safe_open(path, framework="pt") as handle:
        if not list(handle.keys()):
            raise ValueError("empty safetensors file")


@functools.lru_cache(maxsize=2)
def _load(source: _Source) -> tuple[Any, Any, Any]:
    """(model, preprocess, tokenizer) for `source`, eval mode, frozen; cached."""
    import open_clip

    try:
        if source.kind == "local-dir":
            name = f"local-dir:{source.path}"
            model, _, preprocess = open_clip.create_model_and_transforms(name, device="cpu")
            tokenizer = open_clip.get_tokenizer(name)
        elif source.kind == "openai":
            from open_clip.openai import load_openai_model
            from open_clip.transform import PreprocessCfg, image_transform_v2

            # Handles OpenAI's TorchScript archive as well as a plain OpenAI-format state dict.
            model = load_openai_model(source.path, precision="fp32", device="cpu")
            size = model.visual.image_size
            if isinstance(size, (tuple, list)):
                size = int(size[0]) if size[0] == size[-1] else tuple(size)
            preprocess = image_transform_v2(PreprocessCfg(size=size), is_train=False)
            tokenizer = open_clip.get_tokenizer(ARCH)
        elif source.kind == "state-dict":
            if source.path.endswith(".safetensors"):
                _check_safetensors(source.path)  # before building a 150 M-parameter model
            model, _, preprocess = open_clip.create_model_and_transforms(
                ARCH, pretrained=source.path, force_quick_gelu=True, device="cpu"
            )
            tokenizer = open_clip.get_tokenizer(ARCH)
        else:  # "hub": download (only chosen when the hub is reachable and not offline)
            model, _, preprocess = open_clip.create_model_and_transforms(
                ARCH, pretrained=PRETRAINED_TAG, force_quick_gelu=True, device="cpu"
            )
            tokenizer = open_clip.get_tokenizer(ARCH)
    except MissingModelError:
        raise
    except Exception as err:
        where = source.path or f"{ARCH}/{PRETRAINED_TAG} download"
        raise MissingModelError(
            f"n/a: CLIP {ARCH} weights could not be loaded from {where} ({type(err).__name__})"
        ) from err
    model = model.float().eval()
    model.requires_grad_(False)
    return model, preprocess, tokenizer


def clear_clipscore_cache() -> None:
    """Forget loaded CLIP models (tests, or after new weights were supplied)."""
    _load.cache_clear()


def clipscore_available(model_dir: str | os.PathLike[str] | None = None) -> tuple[bool, str]:
    """Cheap check for the UI: (usable, one-line reason). Loads no weights."""
    try:
        source = _resolve(model_dir)
    except MissingModelError as err:
        return False, str(err)
    if source.kind == "hub":
        return True, f"CLIP {ARCH} ({PRETRAINED_TAG}) will download on first use"
    return True, f"CLIP {ARCH} from {source.path}"


def _as_pil(image: Any) -> Image.Image:
    from PIL import Image as PILImage

    if isinstance(image, PILImage.Image):
        return image.convert("RGB")
    import numpy as np

    array: np.ndarray = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise TypeError(
            f"expected a PIL image or a uint8 HxW[xC] array, got {type(image).__name__}"
        )
    return PILImage.fromarray(array).convert("RGB")


def clip_score(
    image: Image.Image | np.ndarray,
    caption: str,
    model_dir: str | os.PathLike[str] | None = None,
) -> ClipScore:
    """100·max(cos(image embedding, caption embedding), 0) with CLIP ViT-B-32 (OpenAI weights).

    `image`: a PIL image or a uint8 HxWx3 array. `caption` is sanitised with `clean_caption`.
    Returns `ClipScore(None, "n/a: ...")` when the weights are missing (offline), the caption is
    empty or the image unusable; never raises for those, and never waits on the network.
    """
    text = clean_caption(caption)
    if not text:
        return ClipScore(None, "n/a: empty caption")
    try:
        pil = _as_pil(image)
    except (TypeError, ValueError) as err:
        return ClipScore(None, f"n/a: unusable image ({err})")
    try:
        source = _resolve(model_dir)
        model, preprocess, tokenizer = _load(source)
    except MissingModelError as err:
        return ClipScore(None, str(err))

    import torch
    import torch.nn.functional as F

    with _score_lock, torch.no_grad():
        pixels = preprocess(pil).unsqueeze(0).to(torch.float32)
        tokens = tokenizer([text])
        img = F.normalize(model.encode_image(pixels).float(), dim=-1)
        txt = F.normalize(model.encode_text(tokens).float(), dim=-1)
        cos = float((img * txt).sum())
    if not math.isfinite(cos):
        return ClipScore(None, "n/a: non-finite CLIP embedding")
    value = 100.0 * max(cos, 0.0)
    what = "download" if source.kind == "hub" else Path(source.path).name
    return ClipScore(value, f"CLIP {ARCH} ({what}): 100·max(cos, 0), cos = {cos:.4f}")
