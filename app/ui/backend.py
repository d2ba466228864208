"""The package functions the UI builds on, behind a `Backend` (injectable: tests pass a fake)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from PIL import Image

from app.errors import MissingModelError, TacoError

if TYPE_CHECKING:  # pragma: no cover

    from app.bitstream import Header
    from app.codecs.protocol import Codec

log = logging.getLogger(__name__)


class Backend(Protocol):
    """The package API the UI builds on (see docs/ARCHITECTURE.md)."""

    def load_codec(self, name: str, allow_random: bool = False) -> Codec: ...
    def classical_codec(self, name: str) -> Codec: ...
    def prepare_image(self, obj: Any, max_side: int) -> tuple[np.ndarray, list[str]]: ...
    def psnr(self, a: np.ndarray, b: np.ndarray) -> float: ...
    def ms_ssim(self, a: np.ndarray, b: np.ndarray) -> float: ...
    def lpips(self, a: np.ndarray, b: np.ndarray, convention: str) -> float: ...
    def token_info(self, kind: str, caption: str) -> Any: ...
    def clean_caption(self, caption: str) -> str: ...
    def captioner_available(self) -> tuple[bool, str]: ...
    def caption_image(self, image: Image.Image) -> str: ...
    def decompress(self, data: bytes) -> Image.Image: ...
    def decompress_untrusted(self, data: bytes) -> Image.Image: ...
    def read_header(self, data: bytes) -> Header: ...
    def word_attention(self, codec: Codec, image: np.ndarray, caption: str) -> Any: ...
    def available_model_sets(self) -> dict[str, dict[str, str]]: ...


def _import(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingModelError(f"{module} is not available: {exc}".splitlines()[0]) from None


class PackageBackend:
    """The real package (`app.codecs`, `app.metrics`, `app.text`, …), imported on first use."""

    def load_codec(self, name: str, allow_random: bool = False) -> Codec:
        return _import("app.codecs").load_codec(name, allow_random=allow_random)

    def classical_codec(self, name: str) -> Codec:
        return _import("app.codecs.classical").get_classical_codec(name)

    def prepare_image(self, obj: Any, max_side: int) -> tuple[np.ndarray, list[str]]:
        return _import("app.images").prepare_image(obj, max_side=max_side)

    def psnr(self, a: np.ndarray, b: np.ndarray) -> float:
        return float(_import("app.metrics").psnr(a, b))

    def ms_ssim(self, a: np.ndarray, b: np.ndarray) -> float:
        return float(_import("app.metrics").ms_ssim(a, b))

    def lpips(self, a: np.ndarray, b: np.ndarray, convention: str) -> float:
        return float(_import("app.metrics").lpips(a, b, convention=convention))

    def token_info(self, kind: str, caption: str) -> Any:
        return _import("app.text").get_text_encoder(kind).tokenize_info(caption)

    def clean_caption(self, caption: str) -> str:
        return _import("app.text").clean_caption(caption)

    def captioner_available(self) -> tuple[bool, str]:
        try:
            mod = _import("app.captioner")
        except TacoError as exc:
            return False, str(exc)
        return mod.captioner_available()

    def caption_image(self, image: Image.Image) -> str:
        return _import("app.captioner").caption_image(image)

    def decompress(self, data: bytes) -> Image.Image:
        return _import("app.codecs").decompress(data)

    def decompress_untrusted(self, data: bytes) -> Image.Image:
        """An uploaded file: decoded in a worker process (`app.sandbox`)."""
        return _import("app.sandbox").decompress_untrusted(data)

    def read_header(self, data: bytes) -> Header:
        return _import("app.codecs").read_header(data)

    def word_attention(self, codec: Codec, image: np.ndarray, caption: str) -> Any:
        """`app.attention.word_attention` (TACO's per-word cross-attention maps)."""
        return _import("app.attention").word_attention(codec, image, caption)

    def available_model_sets(self) -> dict[str, dict[str, str]]:
        return _import("app.codecs").available_model_sets()


_DEFAULT_BACKEND: Backend | None = None


def default_backend() -> Backend:
    global _DEFAULT_BACKEND
    if _DEFAULT_BACKEND is None:
        _DEFAULT_BACKEND = PackageBackend()
    return _DEFAULT_BACKEND
