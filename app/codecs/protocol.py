"""The one interface every codec of the project offers, and what a codec can do.

A codec (TACO, ELIC, JPEG, WebP, AVIF) turns an image into bytes and back. What differs between
them is stated as data in :class:`Capabilities` — never found by probing for methods or by reading
display strings:

* ``learned`` — a neural codec writing the `.taco` container (else a Pillow format);
* ``random_weights`` — running on a deterministic random initialisation (tiny development models,
  or embedded ones without their shipped weights): its numbers mean nothing;
* ``text_encoder`` — the text model whose per-token states the encoder reads (TACO), or None when
  the caption is ignored (ELIC and the classical codecs);
* ``float_decode`` — ``decompress_float`` gives the decoder's unclamped, unrounded output (what the
  paper's PSNR is computed on); otherwise it is the 8-bit image as float;
* ``untrusted_decode`` — files from strangers should be decoded in a child process
  (`app.sandbox`): the learned decoders run a C++ entropy decoder on their input;
* ``early_reconstruction`` — ``encode(..., reconstruct=True)`` at a given rate also returns the
  image decoding gives (from the encoder's own latents), and ``verify(data)`` entropy-decodes a
  file and checks its symbols without synthesising it (`app.measure.code` with ``early``);
* ``rate`` — how the rate is chosen (:class:`RateControl`).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from app.images import ImageLike
from app.metrics import bpp


def as_float32(x: float) -> float:
    """Round a rate parameter to what the header stores, so encoder and decoder agree."""
    return struct.unpack(">f", struct.pack(">f", float(x)))[0]


@dataclass(frozen=True)
class RateControl:
    """How a codec's rate is set.

    ``continuous``: any λ in [lo, hi] (one variable-rate model); ``ladder``: one of the λ of
    ``ladder`` (fixed-rate checkpoints); ``quality``: a Pillow quality in [lo, hi] (integers).
    """

    kind: Literal["continuous", "ladder", "quality"]
    lo: float
    hi: float
    ladder: tuple[float, ...] = ()
    default: float | None = None

    @classmethod
    def continuous(cls, lo: float, hi: float) -> RateControl:
        lo, hi = float(min(lo, hi)), float(max(lo, hi))
        return cls("continuous", lo, hi, (), as_float32(math.sqrt(lo * hi)))

    @classmethod
    def of_ladder(cls, ladder: tuple[float, ...] | list[float]) -> RateControl:
        rungs = tuple(sorted(float(v) for v in ladder))
        return cls("ladder", rungs[0], rungs[-1], rungs, rungs[len(rungs) // 2])

    @classmethod
    def quality(cls, lo: int, hi: int, default: int) -> RateControl:
        return cls("quality", float(lo), float(hi), (), float(default))

    @property
    def unit(self) -> str:
        """What the rate parameter is called: "quality" or "λ"."""
        return "quality" if self.kind == "quality" else "λ"

    @property
    def rate_range(self) -> tuple[float, float] | None:
        """``(lo, hi)`` for a continuous or quality rate, None for a ladder."""
        return None if self.kind == "ladder" else (self.lo, self.hi)

    @property
    def rate_ladder(self) -> list[float] | None:
        """The rungs of a ladder, None otherwise."""
        return list(self.ladder) if self.kind == "ladder" else None


@dataclass(frozen=True)
class Capabilities:
    """What a codec can do (see the module docstring)."""

    learned: bool
    rate: RateControl
    random_weights: bool = False
    text_encoder: str | None = None
    float_decode: bool = False
    untrusted_decode: bool = False
    early_reconstruction: bool = False

    @property
    def reads_caption(self) -> bool:
        """True when the caption changes the bitstream (TACO)."""
        return self.text_encoder is not None


@dataclass
class Encoded:
    """A compressed image and what it cost; ``lmbda`` is the rate parameter used (λ or quality).

    ``recon`` (when the encoder was asked for it and can give it) is the 8-bit image that
    decoding ``data`` on this machine gives, made from the encoder's own quantised latents
    (``recon_ms`` is that synthesis step); a caller that shows it must still confirm it with the
    codec's ``verify(data)``.
    """

    data: bytes
    height: int
    width: int
    lmbda: float | None
    encode_ms: float
    recon: np.ndarray | None = None
    recon_ms: float = 0.0

    @property
    def bpp(self) -> float:
        return bpp(self.data, self.height, self.width)


@runtime_checkable
class Codec(Protocol):
    """What every codec in the project offers."""

    @property
    def name(self) -> str:
        """"taco", "elic", "jpeg", … (what `load_codec` takes and `.taco` headers name)."""
        ...

    @property
    def description(self) -> str:
        """One line for people: model, weights, provenance."""
        ...

    @property
    def capabilities(self) -> Capabilities: ...

    @property
    def rate_range(self) -> tuple[float, float] | None: ...

    @property
    def rate_ladder(self) -> list[float] | None: ...

    def encode(
        self,
        image: ImageLike,
        caption: str = "",
        lmbda: float | None = None,
        target_bpp: float | None = None,
    ) -> Encoded:
        """Compress; ``lmbda`` is the rate parameter, ``target_bpp`` (if given) searches it."""
        ...

    def compress(
        self,
        image: ImageLike,
        caption: str = "",
        lmbda: float | None = None,
        target_bpp: float | None = None,
    ) -> bytes:
        """`encode`'s bytes."""
        ...

    def decompress(self, data: bytes) -> Image.Image:
        """An RGB image; bytes this codec cannot decode raise `BitstreamError`."""
        ...

    def decompress_float(self, data: bytes) -> np.ndarray:
        """(H, W, 3) float32 in [0, 1] scale (unclamped when ``capabilities.float_decode``)."""
        ...

    def fingerprint(self, lmbda: float | None = None) -> bytes | None:
        """The weights fingerprint its files carry (None for a classical codec)."""
        ...
