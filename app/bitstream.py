"""The `.taco` bitstream container.

Layout of version 2 (all integers big-endian)::

    offset  size  field
    0       4     magic  b"TACO"
    4       1     version (= 2)
    5       1     flags: bit 0 = portable coding (exact integer entropy model, decodes the same
                  on every machine); 0 = the official float32 arithmetic. Bit 1 (only with
                  bit 0) = half-grid evaluation of the portable entropy model (each
                  checkerboard half's parameters computed at that half's positions only, the
                  arithmetic every build writes now); bit 0 alone = the earlier full-grid
                  evaluation ("portable-full"), still read. Bit 2 (with bits 0 and 1) = the
                  narrow integer arithmetic (10-bit weights, float32 limbs; what every build
                  writes now); bits 0 and 1 alone = the wide one of earlier builds
                  ("portable-wide"), still read. Other bits must be 0.
    6       1     n = length of the model id (1..MAX_MODEL_ID)
    7       n     model id, ASCII (e.g. "taco-small", "taco-official")
    7+n     8     checkpoint fingerprint (first 8 bytes of the weights' SHA-256)
    15+n    4     rate parameter λ as float32 (NaN for codecs without one)
    19+n    4     original height (1..MAX_SIDE)
    23+n    4     original width  (1..MAX_SIDE)
    27+n    4     tables check: CRC-32 of the encoder's entropy-coder tables
    31+n    4     symbols check: CRC-32 of the quantised latents (y then z symbols, int32 LE)
    35+n    1     k = number of entropy-coded strings (1..MAX_STRINGS)
    36+n    4·k   length of each string
    ...           the strings, in order (y first, then z for TACO / ELIC)
    end-4   4     CRC-32 of every byte before it

Version 1 (still read) has no tables / symbols checks and no flags (always float arithmetic).

The two checks make a file verify its own decoding: a decoder whose tables differ refuses before
decoding, and one whose decoded symbols differ (arithmetic it does not reproduce, e.g. a
float-path file on a CPU with other float kernels) refuses after, instead of returning a wrong
image. The caption is *not* in the file: TACO's decoder never sees text.
The header is checked completely (magic, version, bounds, lengths adding up to the file size,
checksum) before anything is allocated or decoded, so a corrupted, truncated or foreign file
raises :class:`BitstreamError` with a one-line message and never reaches the entropy decoder.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass

from app.errors import BitstreamError

MAGIC = b"TACO"
VERSION = 2
#: Versions this build reads.
VERSIONS = (1, 2)
#: Flag bit 0: the portable (exact) coding path.
FLAG_PORTABLE = 0x01
#: Flag bit 1 (with bit 0): the portable path's half-grid evaluation.
FLAG_HALF_GRID = 0x02
#: Flag bit 2 (with bits 0 and 1): the narrow integer arithmetic.
FLAG_NARROW = 0x04
#: Coding paths: exact narrow half-grid (written by default), exact wide half-grid and wide
#: full-grid (files of earlier builds), official float32.
PORTABLE, PORTABLE_WIDE, PORTABLE_FULL, FLOAT = (
    "portable", "portable-wide", "portable-full", "float")
_CODING_FLAGS = {PORTABLE: FLAG_PORTABLE | FLAG_HALF_GRID | FLAG_NARROW,
                 PORTABLE_WIDE: FLAG_PORTABLE | FLAG_HALF_GRID, PORTABLE_FULL: FLAG_PORTABLE,
                 FLOAT: 0}
_FLAG_CODINGS = {v: k for k, v in _CODING_FLAGS.items()}
MAX_MODEL_ID = 64
MAX_SIDE = 16384
MAX_STRINGS = 8
MAX_FILE_BYTES = 256 * 1024 * 1024
FINGERPRINT_BYTES = 8
_FIXED = struct.Struct(">4sBBB")
_MID = struct.Struct(">8sfIIB")  # version 1
_MID2 = struct.Struct(">8sfIIIIB")  # version 2: + tables check, symbols check
_CRC = struct.Struct(">I")


@dataclass(frozen=True)
class Header:
    """Everything the decoder needs besides the entropy-coded strings."""

    model_id: str
    fingerprint: bytes
    lmbda: float | None
    height: int
    width: int
    coding: str = PORTABLE  # "portable" | "portable-full" | "float"
    tables_crc: int | None = None  # None only in version-1 files
    symbols_crc: int | None = None
    version: int = VERSION

    @property
    def pixels(self) -> int:
        return self.height * self.width


def header_size(model_id: str, n_strings: int, version: int = VERSION) -> int:
    """Bytes of container overhead (header + lengths + checksum) for a model id."""
    mid = _MID2 if version == 2 else _MID
    return _FIXED.size + len(model_id.encode("ascii")) + mid.size + 4 * n_strings + _CRC.size


def pack(header: Header, strings: list[bytes]) -> bytes:
    """Serialise a header and its entropy-coded strings into one `.taco` file."""
    mid = header.model_id.encode("ascii")
    if not 1 <= len(mid) <= MAX_MODEL_ID:
        raise ValueError(f"model id must be 1..{MAX_MODEL_ID} ASCII bytes")
    if len(header.fingerprint) != FINGERPRINT_BYTES:
        raise ValueError(f"fingerprint must be {FINGERPRINT_BYTES} bytes")
    if not (1 <= header.height <= MAX_SIDE and 1 <= header.width <= MAX_SIDE):
        raise ValueError(f"image sides must be 1..{MAX_SIDE}")
    if not 1 <= len(strings) <= MAX_STRINGS:
        raise ValueError(f"1..{MAX_STRINGS} strings expected")
    if header.version not in VERSIONS:
        raise ValueError(f"cannot write .taco version {header.version}")
    if header.coding not in _CODING_FLAGS:
        raise ValueError(f"unknown coding {header.coding!r}")
    lmbda = math.nan if header.lmbda is None else float(header.lmbda)
    if header.version == 1:
        if header.coding != FLOAT:
            raise ValueError("version-1 files hold float-path streams only")
        fixed = _FIXED.pack(MAGIC, 1, 0, len(mid))
        middle = _MID.pack(header.fingerprint, lmbda, header.height, header.width, len(strings))
    else:
        if header.tables_crc is None or header.symbols_crc is None:
            raise ValueError("version-2 files need the tables and symbols checks")
        flags = _CODING_FLAGS[header.coding]
        fixed = _FIXED.pack(MAGIC, 2, flags, len(mid))
        middle = _MID2.pack(header.fingerprint, lmbda, header.height, header.width,
                            header.tables_crc, header.symbols_crc, len(strings))
    parts = [
        fixed,
        mid,
        middle,
        b"".join(struct.pack(">I", len(s)) for s in strings),
        *strings,
    ]
    body = b"".join(parts)
    return body + _CRC.pack(zlib.crc32(body))


def unpack(data: bytes) -> tuple[Header, list[bytes]]:
    """Parse and validate a `.taco` file. Raises :class:`BitstreamError` on any defect."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise BitstreamError("bitstream must be bytes")
    data = bytes(data)
    n = len(data)
    if n > MAX_FILE_BYTES:
        raise BitstreamError(f"file too large for a .taco bitstream ({n} bytes)")
    if n < 4 or data[:4] != MAGIC:
        raise BitstreamError("not a .taco file (bad magic bytes)")
    if n < _FIXED.size:
        raise BitstreamError("truncated .taco file (header incomplete)")
    _, version, flags, mid_len = _FIXED.unpack_from(data, 0)
    if version not in VERSIONS:
        raise BitstreamError(
            f"unsupported .taco version {version} (this build reads versions "
            f"{', '.join(map(str, VERSIONS))})"
        )
    if flags not in (_FLAG_CODINGS if version == 2 else (0,)):
        raise BitstreamError(f"unsupported .taco flags 0x{flags:02x} for version {version}")
    mid_struct = _MID2 if version == 2 else _MID
    if not 1 <= mid_len <= MAX_MODEL_ID:
        raise BitstreamError("corrupted .taco header (model id length)")
    pos = _FIXED.size
    if n < pos + mid_len + mid_struct.size + _CRC.size:
        raise BitstreamError("truncated .taco file (header incomplete)")
    try:
        model_id = data[pos : pos + mid_len].decode("ascii")
    except UnicodeDecodeError:
        raise BitstreamError("corrupted .taco header (model id is not ASCII)") from None
    if not model_id.isprintable():
        raise BitstreamError("corrupted .taco header (model id)")
    pos += mid_len
    tables_crc: int | None = None
    symbols_crc: int | None = None
    if version == 2:
        fingerprint, lmbda, height, width, tables_crc, symbols_crc, k = _MID2.unpack_from(data, pos)
    else:
        fingerprint, lmbda, height, width, k = _MID.unpack_from(data, pos)
    pos += mid_struct.size
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
        raise BitstreamError(f"corrupted .taco header (image size {height}x{width})")
    if not 1 <= k <= MAX_STRINGS:
        raise BitstreamError(f"corrupted .taco header ({k} strings)")
    if n < pos + 4 * k + _CRC.size:
        raise BitstreamError("truncated .taco file (string table incomplete)")
    lengths = struct.unpack_from(f">{k}I", data, pos)
    pos += 4 * k
    if pos + sum(lengths) + _CRC.size != n:
        raise BitstreamError(
            "truncated or extended .taco file "
            f"(expected {pos + sum(lengths) + _CRC.size} bytes, got {n})"
        )
    (crc,) = _CRC.unpack_from(data, n - _CRC.size)
    if zlib.crc32(data[: n - _CRC.size]) != crc:
        raise BitstreamError("corrupted .taco file (checksum mismatch)")
    if math.isnan(lmbda):
        lmbda_v: float | None = None
    elif not (math.isfinite(lmbda) and lmbda > 0):
        raise BitstreamError("corrupted .taco header (rate parameter)")
    else:
        lmbda_v = float(lmbda)
    strings = []
    for length in lengths:
        strings.append(data[pos : pos + length])
        pos += length
    coding = _FLAG_CODINGS[flags]
    header = Header(model_id, fingerprint, lmbda_v, int(height), int(width), coding,
                    tables_crc, symbols_crc, int(version))
    return header, strings


def read_header(data: bytes) -> Header:
    """Validate a `.taco` file and return only its header."""
    return unpack(data)[0]
