"""Decode untrusted `.taco` files in a child process.

compressai's rANS decoder is native code that trusts its input; `app.codecs` bounds what it can
read (a zero guard after every string; docs/ROBUSTNESS.md §1), but that bound comes from reading
the decoder's source and fuzzing, not from a proof. For files uploaded by strangers (the demo's
decode tab) the decoder therefore runs in a separate, reused worker process: a crash of native
code or a decode that runs past ``TACO_DECODE_TIMEOUT_S`` (default 120 s) kills only the worker
and becomes a one-line `BitstreamError`; the server and every other user carry on, and the next
file gets a fresh worker.

The container is validated (magic, version, sizes, CRC) in the calling process first, so garbage
never costs a worker start. The worker loads the same weights the caller would have used
(`app.codecs.decoder_key`) and keeps them loaded between files. ``TACO_ISOLATE_DECODE=0``
decodes in-process instead (e.g. where processes cannot be spawned).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import threading
from collections.abc import Callable, Mapping
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from app.errors import BitstreamError
from app.settings import Settings, get_settings

T = TypeVar("T")


_LOCK = threading.Lock()
_POOL: cf.ProcessPoolExecutor | None = None


def isolation_enabled(env: Mapping[str, str] | None = None) -> bool:
    """False when ``TACO_ISOLATE_DECODE`` is 0/false/no/off (in ``env``, default: the settings)."""
    settings = get_settings() if env is None else Settings.from_env(env)
    return settings.isolate_decode


def _pool() -> cf.ProcessPoolExecutor:
    global _POOL
    with _LOCK:
        if _POOL is None:
            # spawn, not fork: the server process has threads (Gradio, torch) that fork would copy
            # in an undefined state
            _POOL = cf.ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        return _POOL


def _discard(pool: cf.ProcessPoolExecutor) -> None:
    """Kill the pool's worker(s) and forget the pool; the next call starts a fresh one."""
    global _POOL
    with _LOCK:
        if _POOL is pool:
            _POOL = None
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        try:
            proc.kill()
        except (OSError, AttributeError):
            pass
    pool.shutdown(wait=False, cancel_futures=True)


def shutdown() -> None:
    """Stop the worker (it also stops when the interpreter exits)."""
    with _LOCK:
        pool = _POOL
    if pool is not None:
        _discard(pool)


def run_isolated(fn: Callable[..., T], *args: Any, timeout: float | None = None) -> T:
    """``fn(*args)`` in the worker process; crashes and timeouts become `BitstreamError`.

    ``fn`` must be importable by name (a module-level function); exceptions it raises are
    re-raised here unchanged.
    """
    limit = get_settings().decode_timeout_s if timeout is None else float(timeout)
    pool = _pool()
    try:
        future = pool.submit(fn, *args)
        return future.result(timeout=limit)
    except BrokenProcessPool:
        _discard(pool)
        raise BitstreamError("the decoder crashed on this file (it is malformed); "
                             "nothing else was affected") from None
    except cf.TimeoutError:
        _discard(pool)
        raise BitstreamError(f"decoding took longer than {limit:g} s and was stopped") from None


def _decode_in_worker(data: bytes, name: str, checkpoint: str | None, allow_random: bool) -> np.ndarray:
    from app.codecs import load_codec

    codec = load_codec(name, checkpoint=checkpoint, allow_random=allow_random)  # cached per worker
    return np.asarray(codec.decompress(data), dtype=np.uint8)


def decompress_untrusted(data: bytes, timeout: float | None = None) -> Image.Image:
    """`app.codecs.decompress` for a file from a stranger: same result, decoded in the worker."""
    from app import codecs as codec_mod

    if not isolation_enabled():
        return codec_mod.decompress(data)
    header = codec_mod.read_header(data)  # the whole container is validated here first
    name, checkpoint, allow_random = codec_mod.decoder_key(header)
    arr = run_isolated(_decode_in_worker, data, name, checkpoint, allow_random, timeout=timeout)
    return Image.fromarray(arr)
