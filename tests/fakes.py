"""Stand-in codecs for tests: real JPEG bytes behind the `Codec` protocol, with a learned codec's
capabilities (a weights fingerprint, a λ ladder, a float decoder)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from app.codecs.classical import get_classical_codec
from app.codecs.protocol import Capabilities, Encoded, RateControl


class JpegLearned:
    """A "learned" codec that writes JPEG: ``rate_ladder`` is its qualities, seen as λ values.

    Subclasses choose the quality (`quality_for`) and may override ``decompress_float``.
    """

    name = "fake"
    description = "JPEG posing as a learned codec (tests)"
    rate_range: tuple[float, float] | None = None

    def __init__(self, ladder: list[float] | None = None) -> None:
        self.rate_ladder: list[float] | None = list(ladder or [10.0, 40.0, 90.0])
        self.inner = get_classical_codec("jpeg")
        self.captions: list[str] = []
        self.weights = b"\x00" * 8

    @property
    def capabilities(self) -> Capabilities:
        assert self.rate_ladder
        return Capabilities(learned=True, rate=RateControl.of_ladder(self.rate_ladder),
                            text_encoder="minilm", float_decode=True)

    def quality_for(self, caption: str, lmbda: float | None) -> float | None:
        return lmbda

    def encode(self, image, caption: str = "", lmbda=None, target_bpp=None) -> Encoded:
        self.captions.append(caption)
        enc = self.inner.encode(image, lmbda=self.quality_for(caption, lmbda))
        return Encoded(enc.data, enc.height, enc.width, lmbda, enc.encode_ms)

    def compress(self, image, caption: str = "", lmbda=None, target_bpp=None) -> bytes:
        return self.encode(image, caption, lmbda, target_bpp).data

    def decompress(self, data: bytes) -> Image.Image:
        return self.inner.decompress(data)

    def decompress_float(self, data: bytes) -> np.ndarray:
        return np.asarray(self.decompress(data), dtype=np.float32) / 255.0

    def fingerprint(self, lmbda=None) -> bytes:
        return self.weights
