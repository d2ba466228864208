"""The .taco container: round trip, and every malformed file gives a BitstreamError."""

from __future__ import annotations

import math
import struct
import zlib

import pytest

from app import bitstream
from app.bitstream import Header, pack, unpack
from app.errors import BitstreamError

HDR = Header("taco", bytes(range(8)), 0.0125, 512, 768, "portable", 0x1234ABCD, 0xDEADBEEF)


def _blob() -> bytes:
    return pack(HDR, [b"\x01\x02\x03" * 10, b"zz"])


def test_round_trip():
    h, strings = unpack(_blob())
    assert h.model_id == "taco" and h.height == 512 and h.width == 768
    assert h.fingerprint == bytes(range(8))
    assert math.isclose(h.lmbda, 0.0125, rel_tol=1e-6)
    assert strings == [b"\x01\x02\x03" * 10, b"zz"]


def test_overhead_is_declared():
    data = _blob()
    assert len(data) == bitstream.header_size("taco", 2) + 32


def test_no_rate_parameter_round_trips_as_none():
    h, _ = unpack(pack(Header("jpegish", b"\0" * 8, None, 1, 1, "portable", 0, 0), [b""]))
    assert h.lmbda is None


@pytest.mark.parametrize(
    "mutate, msg",
    [
        (lambda d: b"", "bad magic"),
        (lambda d: b"PNG\x89" + d[4:], "bad magic"),
        (lambda d: d[:5], "truncated"),
        (lambda d: d[:20], "truncated"),
        (lambda d: d[:-1], "truncated or extended"),
        (lambda d: d + b"\0", "truncated or extended"),
        (lambda d: d[:4] + b"\x07" + d[5:], "version"),
        (lambda d: d[:5] + b"\x02" + d[6:], "flags"),
        (lambda d: d[:6] + b"\x00" + d[7:], "model id length"),
        (lambda d: d[:30] + bytes([d[30] ^ 0xFF]) + d[31:], "checksum"),
    ],
)
def test_malformed(mutate, msg):
    with pytest.raises(BitstreamError, match=msg):
        unpack(mutate(_blob()))


def _forge(**fields) -> bytes:
    """A file with a valid checksum but hostile header fields."""
    mid = fields.get("mid", b"taco")
    k = fields.get("k", 1)
    lengths = fields.get("lengths", [0] * k)
    body = struct.pack(">4sBBB", b"TACO", 1, 0, len(mid)) + mid
    body += struct.pack(">8sfIIB", b"\0" * 8, fields.get("lmbda", 0.01), fields.get("h", 8), fields.get("w", 8), k)
    body += b"".join(struct.pack(">I", n) for n in lengths) + fields.get("payload", b"")
    return body + struct.pack(">I", zlib.crc32(body))


@pytest.mark.parametrize(
    "fields, msg",
    [
        ({"h": 0}, "image size"),
        ({"w": 2**31}, "image size"),
        ({"k": 0}, "strings"),
        ({"k": 200}, "strings"),
        ({"lengths": [2**32 - 1]}, "truncated or extended"),
        ({"lmbda": -1.0}, "rate parameter"),
        ({"lmbda": float("inf")}, "rate parameter"),
        ({"mid": b"\xff\xfe"}, "ASCII"),
        ({"mid": b"a\nb"}, "model id"),
    ],
)
def test_hostile_header_fields_are_bounded(fields, msg):
    with pytest.raises(BitstreamError, match=msg):
        unpack(_forge(**fields))


def test_bitstream_error_is_a_value_error():
    assert issubclass(BitstreamError, ValueError)


def test_not_bytes():
    with pytest.raises(BitstreamError):
        unpack("TACO")  # type: ignore[arg-type]
