"""Reading `.taco` files: their header, what a user should know about them, and decoding one
with the model its header names (no caption needed: the decoder is text-free)."""

from __future__ import annotations

from PIL import Image

from app import bitstream
from app.codecs.learned import LearnedCodec
from app.codecs.registry import decoder_key, load_codec, loaded_codecs
from app.errors import BitstreamError, MissingModelError


def read_header(data: bytes) -> bitstream.Header:
    """Validate a `.taco` file and return its header (model, rate, size)."""
    return bitstream.read_header(data)


def decode_notes(header: bitstream.Header) -> list[str]:
    """What a user should know about how a file decodes (empty for a portable version-2 file)."""
    if header.version == 1:
        return [
            "version-1 file (made before portable coding): float entropy model and no symbols "
            "check, so it decodes correctly only on a CPU with the encoder's float kernels, and "
            "a wrong result cannot be detected"
        ]
    if header.coding == bitstream.FLOAT:
        return [
            "float-path file (official float32 arithmetic): it decodes only on CPUs whose float "
            "kernels match the encoder's; the symbols check refuses it elsewhere"
        ]
    return []


def decompress(data: bytes) -> Image.Image:
    """Decode a `.taco` file with the model its header names. No caption is needed.

    For files from strangers (the demo's decode tab) use `app.sandbox.decompress_untrusted`,
    which runs this decoder in a child process.
    """
    header, strings = bitstream.unpack(data)
    # Robustness review: only loading is inside the try. A BitstreamError raised while decoding
    # (a corrupted or oversized file) must reach the user as it is, not turn into a misleading
    # "has random weights only" / "weights not in checkpoints" error.
    try:
        codec = load_codec(*decoder_key(header))
    except MissingModelError:
        if not any(isinstance(c, LearnedCodec) and c.name == header.model_id for c in loaded_codecs()):
            raise
        # Only other weights of this model are at hand (e.g. a random-weights development codec).
        raise BitstreamError(
            f"bitstream was made with other {header.model_id} weights ({header.fingerprint.hex()})"
        ) from None
    assert isinstance(codec, LearnedCodec)
    return codec._decode(header, strings)
