"""How numbers and codecs look wherever they are shown: the UI, reports and plots.

One formatter (:func:`fmt`) and one colour / marker per codec family, so that TACO has the same
colour in the demo's RD plot and in a published report, and a missing value reads the same in a
table cell and in the UI.
"""

from __future__ import annotations

import math

#: One colour per codec family, chosen for contrast on a projector and for colour-blind viewers.
COLOURS: dict[str, str] = {
    "taco": "#d62728",
    "elic": "#1f5fbf",
    "jpeg": "#7f7f7f",
    "webp": "#2ca02c",
    "avif": "#9467bd",
}
#: Codecs of no known family.
OTHER_COLOUR = "#444444"
#: A published reference curve (a number from a paper, not measured here).
PUBLISHED_COLOUR = "#8c8c8c"
FAMILIES: tuple[str, ...] = tuple(COLOURS)
MISSING = "–"


def family(name: str) -> str:
    """The codec family in a codec or row name ("taco-official" → "taco", "jpeg@bpp" → "jpeg")."""
    key = name.lower()
    for fam in FAMILIES:
        if fam in key:
            return fam
    return "other"


def colour(name: str) -> str:
    """The colour of a codec (by family)."""
    return COLOURS.get(family(name), OTHER_COLOUR)


def fmt(value: float | None, digits: int, *, signed: bool = False) -> str:
    """A number for display: ``digits`` decimals, "–" when missing or NaN, "∞" / "−∞" when infinite."""
    if value is None:
        return MISSING
    value = float(value)
    if math.isnan(value):
        return MISSING
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
