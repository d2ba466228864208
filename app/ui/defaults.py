"""The demo's defaults: slider positions, sizes, LPIPS conventions, folders (from the settings)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

from app.codecs.registry import CLASSICAL
from app.settings import get_settings

#: The classical codecs the comparison matches to TACO's bpp (the registry's names).
CLASSICAL_CODECS: tuple[str, ...] = CLASSICAL

#: Default slider position (0 = lowest bitrate, 100 = highest).
DEFAULT_RATE = 50.0
DEFAULT_TARGET_BPP = 0.3
#: The target-bpp box accepts this range.
MIN_TARGET_BPP, MAX_TARGET_BPP = 0.005, 24.0
DEFAULT_SECOND_CAPTION = "A crowded city street at night with neon signs and cars."
TEXT_LEN = 38
LpipsConvention = Literal["standard", "paper"]
LPIPS_LABELS: dict[str, str] = {
    "standard": "standard: inputs scaled to [-1, 1]",
    "paper": "paper convention: [0, 1] inputs, as TACO's scripts",
}

ProgressFn = Callable[[float, str], None]


def no_progress(_fraction: float, _desc: str) -> None:
    return None


def max_side() -> int:
    """Longest image side the demo works on (``TACO_UI_MAX_SIDE``; 2 cores on a free Space)."""
    return get_settings().ui_max_side


def assets_dir() -> Path:
    return get_settings().root / "assets"


def results_dir() -> Path:
    return get_settings().root / "docs" / "results"
