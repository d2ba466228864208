"""Bounds that keep hostile `.taco` files from costing the decoder more than an honest one.

The header allows 16384x16384 and the decoder's work follows the *claimed* size, not the file
size: a 193-byte forged file claiming 2048x2048 costs 4 s / 0.4 GB on the tiny model, and the
official N192/M320 architecture needs ~13 s and ~0.65 GB per megapixel on one core, i.e. about an
hour and 170 GB at 16384x16384 (``scripts/robustness_report.py --forged --official-cost``). So
decoding is refused above a pixel bound (``TACO_MAX_PIXELS``, default 2048x2048: Kodak, CLIC and
Tecnick fit; a public Space should use ~1 MP) before any model runs, and encoding refuses the same
sizes so that every file we write can be read back.
"""

from __future__ import annotations

import numpy as np

from app import bitstream
from app.errors import BitstreamError, TacoError

#: Entropy-coded strings longer than this many bytes per pixel (32 bpp) are not from our encoder.
MAX_STRING_BYTES_PER_PIXEL = 4


def check_encode_size(height: int, width: int, max_pixels: int) -> None:
    """Refuse to encode an image whose file this build would refuse to decode."""
    if height > bitstream.MAX_SIDE or width > bitstream.MAX_SIDE:
        raise TacoError(f"image sides must be at most {bitstream.MAX_SIDE} px")
    if height * width > max_pixels:
        raise TacoError(
            f"image is {width}x{height} ({height * width / 1e6:.1f} MP): the learned codecs take at "
            f"most {max_pixels / 1e6:.1f} MP (TACO_MAX_PIXELS); downscale it first"
        )


def check_decode_size(header: bitstream.Header, strings: list[bytes], max_pixels: int) -> None:
    """Bound the work a forged (valid-CRC) header can ask for, before any model runs."""
    if header.pixels > max_pixels:
        raise BitstreamError(
            f"bitstream claims a {header.width}x{header.height} image "
            f"({header.pixels / 1e6:.1f} MP): more than the {max_pixels / 1e6:.1f} MP "
            "this build decodes (TACO_MAX_PIXELS)"
        )
    if sum(map(len, strings)) > MAX_STRING_BYTES_PER_PIXEL * header.pixels + 65536:
        raise BitstreamError("corrupted .taco file (entropy-coded data too large for its size)")


def rans_guard(string: bytes, n_symbols: int) -> bytes:
    """Append enough zero bytes that compressai's rANS decoder cannot read past the buffer.

    Robustness review: the C++ decoder (compressai/cpp_exts/rans/rans_interface.cpp) never checks
    the end of its input. A valid-CRC `.taco` whose z string is 200 kB of 0xFF made it read far past
    the buffer and the process died with SIGSEGV (one upload would kill the Space). The reads are
    bounded, though: the state refills one aligned 32-bit word at a time; a normal symbol reads at
    most one word; an escape ("bypass") symbol reads 15 nibbles per 0xF nibble it meets, and a long
    run of 0xF nibbles needs a run of 0xFFFFFFFF words in the data. So, with ``w`` the longest run
    of aligned 0xFFFFFFFF words, the symbol that crosses the end reads at most 60·w + 132 bytes
    beyond it, and every later symbol, decoding from zeros (at most 9 carried 0xF nibbles), at most
    ~92 bytes. Trailing zeros never change a valid stream (the decoder stops where the encoder did).
    """
    words = np.frombuffer(string[: len(string) // 4 * 4], dtype="<u4")
    longest = 0
    if words.size:
        ones = np.concatenate(([0], (words == 0xFFFFFFFF).astype(np.int8), [0]))
        edges = np.flatnonzero(np.diff(ones))
        if edges.size:
            longest = int((edges[1::2] - edges[::2]).max())
    return bytes(string) + bytes(64 * longest + 96 * n_symbols + 1024)
