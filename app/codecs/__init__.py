"""One `Codec` interface for TACO, ELIC and the classical codecs.

>>> from app.codecs import load_codec, decompress
>>> codec = load_codec("taco")                       # embedded, shipped weights
>>> data = codec.compress(img, caption="a red car", lmbda=0.01)   # -> bytes (.taco file)
>>> rec = decompress(data)                           # no caption needed: the decoder is text-free

* :mod:`app.codecs.protocol` — the `Codec` protocol, its `Capabilities` and `RateControl`;
* :mod:`app.codecs.learned` — TACO / ELIC behind it (the `.taco` container);
* :mod:`app.codecs.classical` — JPEG, WebP, AVIF through Pillow;
* :mod:`app.codecs.guards` — size and buffer bounds against hostile files;
* :mod:`app.codecs.registry` — names → configs and weights, the cached `load_codec`;
* :mod:`app.codecs.decoding` — reading and decoding `.taco` files by their header.
"""

from app.codecs.decoding import decode_notes, decompress, read_header
from app.codecs.learned import CODINGS, LearnedCodec, pad_tensor
from app.codecs.protocol import Capabilities, Codec, Encoded, RateControl, as_float32
from app.codecs.registry import (
    CLASSICAL,
    LEARNED,
    OFFICIAL_LAMBDAS,
    CodecFactory,
    ModelSpec,
    available_model_sets,
    decoder_key,
    load_codec,
    load_manifest,
    loaded_codecs,
    official_checkpoints,
)

__all__ = [
    "CLASSICAL",
    "CODINGS",
    "LEARNED",
    "OFFICIAL_LAMBDAS",
    "Capabilities",
    "Codec",
    "CodecFactory",
    "Encoded",
    "LearnedCodec",
    "ModelSpec",
    "RateControl",
    "as_float32",
    "available_model_sets",
    "decode_notes",
    "decoder_key",
    "decompress",
    "load_codec",
    "load_manifest",
    "loaded_codecs",
    "official_checkpoints",
    "pad_tensor",
    "read_header",
]
