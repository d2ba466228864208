"""app.sandbox: uploaded bitstreams are decoded in a worker process that may crash or hang."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from app import sandbox
from app.errors import BitstreamError

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGSEGV"), reason="needs POSIX signals")


def _segfault(_: bytes) -> None:  # what a native-code bug in the decoder does to its process
    os.kill(os.getpid(), signal.SIGSEGV)


def _hang(seconds: float) -> None:
    time.sleep(seconds)


def _length(data: bytes) -> int:
    return len(data)


def _refuse(_: bytes) -> None:
    raise BitstreamError("corrupted y string")


@pytest.fixture(autouse=True)
def _fresh_worker():
    yield
    sandbox.shutdown()


def test_a_crash_kills_only_the_worker_and_the_next_call_gets_a_new_one():
    with pytest.raises(BitstreamError, match="decoder crashed on this file"):
        sandbox.run_isolated(_segfault, b"\xff" * 64)
    assert sandbox.run_isolated(_length, b"abc") == 3


def test_a_hang_is_stopped_at_the_timeout():
    t0 = time.monotonic()
    with pytest.raises(BitstreamError, match="longer than 1 s"):
        sandbox.run_isolated(_hang, 60, timeout=1)
    assert time.monotonic() - t0 < 30
    assert sandbox.run_isolated(_length, b"ab") == 2


def test_errors_of_the_decoder_come_back_unchanged():
    with pytest.raises(BitstreamError, match="corrupted y string"):
        sandbox.run_isolated(_refuse, b"")


def test_isolated_decode_equals_in_process_decode(monkeypatch):
    from app.codecs import decompress, load_codec, read_header

    codec = load_codec("taco-tiny", allow_random=True)  # random weights: the worker rebuilds them
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    data = codec.compress(img, caption="a test", lmbda=codec.rate_range[1])
    assert read_header(data).model_id == "taco-tiny"
    expected = np.asarray(decompress(data))
    got = np.asarray(sandbox.decompress_untrusted(data))
    np.testing.assert_array_equal(got, expected)
    with pytest.raises(BitstreamError):  # garbage is refused before any worker runs
        sandbox.decompress_untrusted(b"TACO" + b"\0" * 40)
    monkeypatch.setenv("TACO_ISOLATE_DECODE", "0")
    np.testing.assert_array_equal(np.asarray(sandbox.decompress_untrusted(data)), expected)


def test_isolation_switch():
    assert sandbox.isolation_enabled({}) and sandbox.isolation_enabled({"TACO_ISOLATE_DECODE": "1"})
    assert not sandbox.isolation_enabled({"TACO_ISOLATE_DECODE": "off"})
