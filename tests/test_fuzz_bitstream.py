"""Hostile `.taco` bitstreams: property-based fuzzing of the container and of the real decoder.

Every case must end in :class:`app.errors.BitstreamError` (the codec's own error, a ValueError)
or in an image of the size the header claims, within the 2 s Hypothesis deadline, without the
process growing by a gigabyte, and never with a crash (the entropy decoder is C++: a crash there
is a SIGSEGV that kills the Space, see docs/ROBUSTNESS.md).

Random mutations are nearly all caught by the CRC-32, so most strategies here *recompute the CRC
after mutating*: that is what makes the payload reach the header checks and the entropy decoder.

``FUZZ_EXAMPLES`` sets ``max_examples`` (default 200, so the default suite stays short);
``make fuzz`` runs 10 000. Runs are derandomized (reproducible in CI) and write no database.
"""

from __future__ import annotations

import dataclasses
import math
import os
import resource
import struct
import tracemalloc
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from app import bitstream
from app.bitstream import MAX_MODEL_ID, MAX_SIDE, MAX_STRINGS, Header, pack, unpack
from app.errors import BitstreamError

_ENV_EXAMPLES = os.environ.get("FUZZ_EXAMPLES")
#: Cases per container property (each takes ~5 ms) and for the real decoder (~0.1 s each: one
#: tiny-model decode). ``FUZZ_EXAMPLES`` sets both; ``make fuzz`` uses 10 000.
FUZZ_EXAMPLES = int(_ENV_EXAMPLES or 200)
DECODER_EXAMPLES = int(_ENV_EXAMPLES or 40)


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=2000,
        derandomize=True,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


FUZZ = _settings(FUZZ_EXAMPLES)
FUZZ_DECODER = _settings(DECODER_EXAMPLES)
# pytest-timeout (600 s per test in pyproject) must scale with the case count under `make fuzz`:
# ~0.2 s per decoder case and ~10 ms per container case on a busy 2-core host, with a 5x margin.
pytestmark = pytest.mark.timeout(max(600, FUZZ_EXAMPLES // 20))
DECODER_TIMEOUT = pytest.mark.timeout(max(600, DECODER_EXAMPLES))
#: A decode may not grow the process by this much (the brief: "under 1 GB").
MAX_RSS_GROWTH_BYTES = 1 << 30
_CRC = 4

# ------------------------------------------------------------------------------- strategies

printable_ascii = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
model_ids = st.text(printable_ascii, min_size=1, max_size=MAX_MODEL_ID)
lambdas = st.one_of(
    st.none(),
    st.floats(min_value=2.0**-20, max_value=1024.0, allow_nan=False, allow_infinity=False, width=32),
)
headers = st.builds(
    Header,
    model_id=model_ids,
    fingerprint=st.binary(min_size=8, max_size=8),
    lmbda=lambdas,
    height=st.integers(1, MAX_SIDE),
    width=st.integers(1, MAX_SIDE),
    coding=st.sampled_from(["portable", "float"]),
    tables_crc=st.integers(0, 2**32 - 1),
    symbols_crc=st.integers(0, 2**32 - 1),
)
string_lists = st.lists(st.binary(max_size=64), min_size=1, max_size=MAX_STRINGS)


@st.composite
def mutations(draw: st.DrawFn, size: int) -> list[tuple[str, int, bytes]]:
    """A short list of edits (flip / set / insert / delete / truncate / extend) for ``size`` bytes."""
    ops = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "extend"]))
        pos = draw(st.integers(0, max(0, size - 1)))
        if kind == "flip":
            payload = bytes([1 << draw(st.integers(0, 7))])
        elif kind in ("set", "insert", "extend"):
            payload = draw(st.binary(min_size=1, max_size=16))
        else:
            payload = b""
        ops.append((kind, pos, payload))
    return ops


def apply(data: bytes, ops: list[tuple[str, int, bytes]]) -> bytes:
    buf = bytearray(data)
    for kind, pos, payload in ops:
        pos = min(pos, max(0, len(buf) - 1))
        if kind == "flip" and buf:
            buf[pos] ^= payload[0]
        elif kind == "set" and buf:
            buf[pos : pos + len(payload)] = payload
        elif kind == "insert":
            buf[pos:pos] = payload
        elif kind == "delete":
            del buf[pos : pos + 1 + pos % 7]
        elif kind == "truncate":
            del buf[pos:]
        elif kind == "extend":
            buf += payload
    return bytes(buf)


def fix_crc(data: bytes) -> bytes:
    """Recompute the trailing CRC-32 so that a mutated file passes the checksum."""
    if len(data) < _CRC:
        return data
    body = data[:-_CRC]
    return body + struct.pack(">I", zlib.crc32(body))


def check_parsed(data: bytes, header: Header, strings: list[bytes]) -> None:
    """What a successful parse guarantees, whatever the input was."""
    assert 1 <= len(header.model_id) <= MAX_MODEL_ID and header.model_id.isprintable()
    assert header.model_id.isascii()
    assert len(header.fingerprint) == bitstream.FINGERPRINT_BYTES
    assert 1 <= header.height <= MAX_SIDE and 1 <= header.width <= MAX_SIDE
    assert header.lmbda is None or (math.isfinite(header.lmbda) and header.lmbda > 0)
    assert 1 <= len(strings) <= MAX_STRINGS
    assert sum(map(len, strings)) + bitstream.header_size(header.model_id, len(strings)) == len(data)


def parse_or_refuse(data: bytes) -> tuple[Header, list[bytes]] | None:
    try:
        header, strings = unpack(data)
    except BitstreamError as exc:
        assert isinstance(exc, ValueError)
        msg = str(exc)
        assert msg and "\n" not in msg
        return None
    check_parsed(data, header, strings)
    return header, strings


# ------------------------------------------------------------------------------- container alone


@FUZZ
@given(header=headers, strings=string_lists)
def test_round_trip(header: Header, strings: list[bytes]) -> None:
    data = pack(header, strings)
    parsed = parse_or_refuse(data)
    assert parsed is not None
    got, got_strings = parsed
    assert got_strings == strings
    assert (got.model_id, got.fingerprint, got.height, got.width) == (
        header.model_id, header.fingerprint, header.height, header.width,
    )
    if header.lmbda is None:
        assert got.lmbda is None
    else:
        assert got.lmbda == pytest.approx(header.lmbda, rel=1e-6)


@FUZZ
@given(header=headers, strings=string_lists, data=st.data())
def test_mutations_with_stale_crc_are_refused(
    header: Header, strings: list[bytes], data: st.DataObject
) -> None:
    original = pack(header, strings)
    mutated = apply(original, data.draw(mutations(len(original))))
    parsed = parse_or_refuse(mutated)
    if parsed is not None:  # the edits cancelled out, or only touched bytes that do not matter
        assert mutated == original


@FUZZ
@given(header=headers, strings=string_lists, data=st.data())
def test_mutations_with_recomputed_crc(
    header: Header, strings: list[bytes], data: st.DataObject
) -> None:
    original = pack(header, strings)
    parse_or_refuse(fix_crc(apply(original, data.draw(mutations(len(original))))))


@FUZZ
@given(tail=st.binary(max_size=512), crc=st.booleans())
def test_random_bytes_after_the_magic(tail: bytes, crc: bool) -> None:
    blob = b"TACO" + tail
    parse_or_refuse(fix_crc(blob) if crc else blob)


@FUZZ
@given(
    version=st.integers(0, 255),
    flags=st.integers(0, 255),
    model_id=st.binary(max_size=80),
    declared_mid=st.one_of(st.none(), st.integers(0, 255)),
    lmbda=st.floats(width=32),
    height=st.integers(0, 2**32 - 1),
    width=st.integers(0, 2**32 - 1),
    k=st.integers(0, 255),
    lengths=st.lists(st.integers(0, 2**32 - 1), max_size=12),
    payload=st.binary(max_size=128),
)
def test_hand_crafted_headers_with_valid_crc(
    version: int,
    flags: int,
    model_id: bytes,
    declared_mid: int | None,
    lmbda: float,
    height: int,
    width: int,
    k: int,
    lengths: list[int],
    payload: bytes,
) -> None:
    mid_len = len(model_id) if declared_mid is None else declared_mid
    body = struct.pack(">4sBBB", b"TACO", version, flags, mid_len) + model_id
    body += struct.pack(">8sfIIB", bytes(8), lmbda, height, width, k)
    body += b"".join(struct.pack(">I", n) for n in lengths) + payload
    parse_or_refuse(body + struct.pack(">I", zlib.crc32(body)))


def test_header_bounds_make_giant_allocations_impossible() -> None:
    """A header can only claim ≤ 16384² pixels, ≤ 8 strings and exactly the bytes it carries."""
    assert MAX_SIDE**2 == 16384**2 and MAX_STRINGS <= 8
    body = struct.pack(">4sBBB", b"TACO", 1, 0, 4) + b"taco"
    body += struct.pack(">8sfIIB", bytes(8), 0.01, 16384, 16384, 8)
    body += struct.pack(">8I", *([2**32 - 1] * 8))
    forged = body + struct.pack(">I", zlib.crc32(body))
    tracemalloc.start()
    try:
        with pytest.raises(BitstreamError, match="truncated or extended"):
            unpack(forged)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024  # nothing was sized from the declared lengths


# ------------------------------------------------------------------------------- the real decoder


@dataclass
class RealFiles:
    """Real `.taco` files from the tiny random models, and the process size before fuzzing them."""

    files: dict[str, bytes]
    rss_start: int


@pytest.fixture(scope="module")
def real() -> Iterator[RealFiles]:
    import torch

    from app.codecs import load_codec

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convs: 10x faster than 2 contending threads on a busy host
    # With random weights allowed, a file whose fingerprint was mutated reaches the fingerprint
    # check (BitstreamError) instead of stopping at "random weights only" (MissingModelError).
    old_env = os.environ.get("TACO_ALLOW_RANDOM")
    os.environ["TACO_ALLOW_RANDOM"] = "1"
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 40 * 56).reshape(40, 56)
    noisy = np.stack([ramp, ramp[::-1], ramp[:, ::-1]], -1) + rng.normal(0, 9, (40, 56, 3))
    img = np.clip(noisy, 0, 255).astype(np.uint8)
    files = {
        "taco-tiny": load_codec("taco-tiny", allow_random=True).compress(img, caption="a test card"),
        "elic-tiny": load_codec("elic-tiny", allow_random=True).compress(img),
    }
    try:
        yield RealFiles(files, _rss())
    finally:
        torch.set_num_threads(threads)
        if old_env is None:
            os.environ.pop("TACO_ALLOW_RANDOM", None)
        else:
            os.environ["TACO_ALLOW_RANDOM"] = old_env


def decode_or_refuse(data: bytes, model: str | None = None) -> Image.Image | None:
    """Decode with the model the header names; a BitstreamError (one line) is the only refusal.

    A mutated model id may name a model whose weights are absent here (MissingModelError): that
    is accepted only when the id differs from ``model``, the one that made the file.
    """
    from app.codecs import decompress
    from app.errors import MissingModelError

    try:
        header, _ = unpack(data)
    except BitstreamError:
        header = None
    try:
        img = decompress(data)
    except BitstreamError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg
        return None
    except MissingModelError as exc:
        assert header is not None and model is not None and header.model_id != model, exc
        return None
    assert header is not None
    assert isinstance(img, Image.Image) and img.mode == "RGB"
    assert img.size == (header.width, header.height)
    return img


def _rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _payload_offset(data: bytes) -> int:
    _, strings = unpack(data)
    return len(data) - _CRC - sum(map(len, strings))


MODELS = st.sampled_from(["taco-tiny", "elic-tiny"])


def test_real_files_decode(real: RealFiles) -> None:
    for model, data in real.files.items():
        assert decode_or_refuse(data, model) is not None


def _flip_payload(original: bytes, data: st.DataObject) -> bytes:
    """Bit flips / byte edits inside the entropy-coded strings, CRC fixed: reaches the rANS decoder."""
    start = _payload_offset(original)
    buf = bytearray(original[start:-_CRC])
    edits = data.draw(
        st.lists(st.tuples(st.integers(0, len(buf) - 1), st.integers(1, 255)), min_size=1, max_size=8)
    )
    for pos, xor in edits:
        buf[pos] ^= xor
    return fix_crc(original[:start] + bytes(buf) + original[-_CRC:])


def _mutate_anywhere(original: bytes, data: st.DataObject) -> bytes:
    """Any edit anywhere (header included: size, λ, fingerprint, string table), CRC fixed."""
    return fix_crc(apply(original, data.draw(mutations(len(original)))))


def _replace_string(original: bytes, data: st.DataObject) -> bytes:
    """The y or z string replaced by garbage, a repeated pattern or a long 0xFF run (the
    bypass-mode over-read attack); string table and CRC valid."""
    header, strings = unpack(original)
    strings = list(strings)
    strings[data.draw(st.sampled_from([0, 1]))] = data.draw(
        st.one_of(
            st.binary(max_size=256),
            st.integers(0, 60_000).map(lambda n: b"\xff" * n),
            st.tuples(st.binary(min_size=1, max_size=32), st.integers(0, 2048)).map(
                lambda t: t[0] * t[1]
            ),
        )
    )
    return pack(header, strings)


def _cut_or_extend(original: bytes, data: st.DataObject) -> bytes:
    """Each string cut short and/or extended with random bytes; table and CRC valid."""
    header, strings = unpack(original)
    new = []
    for s in strings:
        cut = data.draw(st.integers(0, len(s)))
        new.append(s[:cut] + data.draw(st.binary(max_size=64)))
    return pack(header, new)


ATTACKS = {
    "flip_payload": _flip_payload,
    "mutate_anywhere": _mutate_anywhere,
    "replace_string": _replace_string,
    "cut_or_extend": _cut_or_extend,
}


@DECODER_TIMEOUT
@FUZZ_DECODER
@given(model=MODELS, attack=st.sampled_from(sorted(ATTACKS)), data=st.data())
def test_decoder_on_hostile_files(
    real: RealFiles, model: str, attack: str, data: st.DataObject
) -> None:
    """Hostile variants of a real file, all with a valid CRC, through `app.codecs.decompress`."""
    forged = ATTACKS[attack](real.files[model], data)
    outcome = "image" if decode_or_refuse(forged, model) is not None else "refused"
    event(f"{attack}: {outcome}")


def test_decoder_survives_the_0xff_string_that_crashed_it(real: RealFiles) -> None:
    """Regression: 200 kB of 0xFF as the z string made compressai's C++ rANS decoder read past its
    buffer (SIGSEGV). Now: refused as too large for the image, and 60 kB (within the size bound)
    decodes from the zero-guarded buffer."""
    from app.codecs import decompress

    header, strings = unpack(real.files["elic-tiny"])
    for which in (0, 1):
        forged = list(strings)
        forged[which] = b"\xff" * 60_000
        decode_or_refuse(pack(header, forged), "elic-tiny")
    with pytest.raises(BitstreamError, match="too large"):
        decompress(pack(header, [strings[0], b"\xff" * 200_000]))


@pytest.mark.parametrize("side", [16384, 2049])
def test_forged_giant_size_is_refused_before_decoding(real: RealFiles, side: int) -> None:
    """Valid CRC, tiny strings, a claimed 16384² (or just over the cap) image: refused at once."""
    from app import codecs as codec
    from app.settings import get_settings

    header, strings = unpack(real.files["taco-tiny"])
    cap = get_settings().max_pixels
    if side * side <= cap:
        pytest.skip(f"TACO_MAX_PIXELS={cap} allows {side}x{side}")
    forged = pack(dataclasses.replace(header, height=side, width=side), strings)
    before = _rss()
    with pytest.raises(BitstreamError, match="MP"):
        codec.decompress(forged)
    assert _rss() - before < 64 << 20


def test_fuzzing_stayed_under_a_gigabyte(real: RealFiles) -> None:
    """Runs after the decoder fuzz tests (file order): the process never grew by 1 GB."""
    assert _rss() - real.rss_start < MAX_RSS_GROWTH_BYTES
