"""Whether the Hugging Face hub may be reached, and where its cache is.

The optional models (CLIP and MiniLM text encoders, BLIP captions, open_clip for CLIPScore) load
from a local folder or the hub cache; a download is attempted only when this says the hub is
reachable. ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` (the hub libraries' own switches) and the
cache variables are read at call time, so a caller or test can change them.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlparse

_TRUE = {"1", "ON", "YES", "TRUE"}
_PROBE_TTL_S = 60.0
_probe_lock = threading.Lock()
_probe_cache: dict[tuple[str, int], tuple[float, bool]] = {}


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in _TRUE


def offline_mode() -> bool:
    """True when `HF_HUB_OFFLINE` or `TRANSFORMERS_OFFLINE` is set (read at call time)."""
    return _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE")


def hf_cache_dir() -> str:
    """The Hugging Face hub cache folder, resolved from the environment at call time.

    Same rules as `huggingface_hub` (`HF_HUB_CACHE`, else `HF_HOME/hub`, else
    `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`), but evaluated now rather
    than at import, so that tests and callers can redirect it.
    """
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return os.path.expanduser(os.path.expandvars(explicit))
    home = os.environ.get("HF_HOME")
    if not home:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
        home = os.path.join(xdg, "huggingface")
    return os.path.join(os.path.expanduser(os.path.expandvars(home)), "hub")


def probe(host: str, port: int, timeout: float) -> bool:
    """One TCP connect to (host, port), bounded by `timeout` even if DNS stalls."""
    result: list[bool] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=attempt, name="taco-hub-probe", daemon=True)
    worker.start()
    worker.join(timeout + 0.5)
    return bool(result and result[0])


def hub_reachable(timeout: float = 1.5) -> bool:
    """Whether downloads from the Hugging Face hub may be attempted.

    False at once (no socket opened) in offline mode. Otherwise a single TCP connect to the hub
    endpoint (`HF_ENDPOINT`, default huggingface.co:443), cached for a minute. With an HTTPS proxy
    configured the probe is skipped and the hub's own timeouts apply.
    """
    if offline_mode():
        return False
    if os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy"):
        return True
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host = url.hostname or "huggingface.co"
    port = url.port or (80 if url.scheme == "http" else 443)
    key = (host, port)
    now = time.monotonic()
    with _probe_lock:
        hit = _probe_cache.get(key)
        if hit is not None and now - hit[0] < _PROBE_TTL_S:
            return hit[1]
    ok = probe(host, port, timeout)
    with _probe_lock:
        _probe_cache[key] = (time.monotonic(), ok)
    return ok


@contextlib.contextmanager
def quiet_loading(enabled: bool = True) -> Iterator[None]:
    """Hide transformers' "Loading weights" progress bar while a local model loads.

    The bar goes to stderr, where the CLI promises one line per message; a download (not local)
    keeps its progress bars, since the user waits for it. transformers' switch also covers
    huggingface_hub's bars, so it is restored afterwards.
    """
    if not enabled:
        yield
        return
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    if was_on:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()
