"""Shared test fixtures. Tests never touch the network and skip cleanly without ../shared."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TACO_SHARED", ROOT.parent / "shared"))


@pytest.fixture(autouse=True)
def fresh_settings():
    """Each test starts from settings rebuilt from the environment it set up (``monkeypatch.setenv``
    before the first use), and leaves none behind."""
    from app.settings import set_settings

    set_settings(None)
    yield
    set_settings(None)


def synthetic_photo(h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    """A smooth, photo-like (H, W, 3) uint8 image: three sinusoidal gradients plus mild noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([128 + 100 * np.sin(x / 17.0 + seed), 128 + 90 * np.cos(y / 13.0),
                    128 + 80 * np.sin((x + y) / 23.0)], axis=2)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def photo() -> Callable[..., np.ndarray]:
    """`synthetic_photo`, as a fixture: ``photo(h, w, seed)``."""
    return synthetic_photo


@pytest.fixture(scope="session")
def tiny_elic():
    """The tiny random-weights ELIC (``elic-tiny``), loaded once for the session."""
    from app.codecs import load_codec

    return load_codec("elic-tiny", allow_random=True)


@pytest.fixture(scope="session")
def tiny_taco():
    """The tiny random-weights TACO (``taco-tiny``, MiniLM text), loaded once for the session."""
    from app.codecs import load_codec

    return load_codec("taco-tiny", allow_random=True)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared is not present")
    return SHARED


@pytest.fixture(scope="session")
def kodak_dir(shared_dir: Path) -> Path:
    d = shared_dir / "data" / "kodak"
    if not d.is_dir():
        pytest.skip("../shared/data/kodak is not present")
    return d


@pytest.fixture()
def refused_connections(monkeypatch: pytest.MonkeyPatch):
    """Refuse every socket connection and DNS lookup; yield the list of attempts.

    Loaders may catch the refusal, so tests that use this check the list at teardown.
    """
    import socket

    attempts: list[str] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(repr(args)[:200])
        raise OSError("network access refused by the test")

    for owner, name in [
        (socket, "create_connection"),
        (socket, "getaddrinfo"),
        (socket.socket, "connect"),
        (socket.socket, "connect_ex"),
    ]:
        monkeypatch.setattr(owner, name, refuse)
    yield attempts
