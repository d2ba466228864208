"""Caption policies of ``python -m app eval --caption-mode``.

A captions JSON maps a file name (or stem) to one caption or a list of captions (COCO has
about five human captions per image). A policy turns that into the caption(s) each image is
encoded with:

=========  =================================================================================
given      the image's first caption (one row per image)
each       every caption of the image, one row per caption (``caption`` column: its index)
best-of    every caption; the row kept is the one whose reconstruction has the lowest LPIPS
           against the original (``caption`` column: the index chosen). This is what the
           official COCO-30k script meant to do; as released it starts the best LPIPS at 0.0,
           so no caption ever beats it, nothing is selected and its averages use the last
           caption. Here the best starts at +∞, so the lowest-LPIPS caption is kept.
empty      no caption ("")
other      the first caption of the next image in sorted order (a mismatched caption)
=========  =================================================================================

Images without an entry get the single caption ``""`` under every policy. Classical codecs
ignore captions: under ``each`` and ``best-of`` they are measured once per image (caption 0).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from app.errors import ConfigError

if TYPE_CHECKING:
    from app.eval.schema import Row

CAPTION_MODES: tuple[str, ...] = ("given", "each", "best-of", "empty", "other")
#: Policies whose rows carry the index of the caption used (results.csv column ``caption``).
INDEXED_MODES: tuple[str, ...] = ("each", "best-of")
#: Row columns ``best-of`` may select by (lower is better for both).
SELECT_COLUMNS: tuple[str, ...] = ("lpips", "lpips_paper")

#: One line per policy, for ``--help`` and the report.
DESCRIPTIONS: dict[str, str] = {
    "given": "each image's first caption",
    "each": "every caption of each image, one row per caption",
    "best-of": "every caption of each image; the lowest-LPIPS reconstruction is kept",
    "empty": "no caption (\"\")",
    "other": "the next image's first caption (mismatched)",
}


def load_caption_lists(path: Path | None) -> dict[str, list[str]]:
    """Captions JSON → {key: [captions]} (a single string becomes a one-element list)."""
    if path is None:
        return {}
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read captions {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"captions {path}: expected a JSON object filename -> caption")
    out: dict[str, list[str]] = {}
    for key, value in raw.items():
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str) for v in values):
            raise ConfigError(f"captions {path}: entry {key!r} is not a string or list of strings")
        out[str(key)] = list(values)
    return out


def own_captions(captions: Mapping[str, Sequence[str]], image: Path) -> list[str]:
    """All captions of ``image``: by file name, else by stem; ``[]`` if none."""
    return list(captions.get(image.name, captions.get(image.stem, [])))


def policy_captions(mode: str, files: Sequence[Path],
                    captions: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """{file name: the candidate captions of that image under policy ``mode``} (never empty).

    ``given`` / ``empty`` / ``other`` give one caption per image; ``each`` and ``best-of`` give
    all of the image's captions, in the order of the JSON.
    """
    if mode not in CAPTION_MODES:
        raise ConfigError(f"caption mode must be one of {', '.join(CAPTION_MODES)}")
    own = [own_captions(captions, f) or [""] for f in files]
    if mode == "empty":
        return {f.name: [""] for f in files}
    if mode == "other":
        return {f.name: [own[(i + 1) % len(files)][0]] for i, f in enumerate(files)}
    if mode == "given":
        return {f.name: [c[0]] for f, c in zip(files, own, strict=True)}
    return {f.name: list(c) for f, c in zip(files, own, strict=True)}


def score(row: Row, column: str) -> float:
    """The selection score of a row: its ``column`` value, +∞ when missing or not finite."""
    value = getattr(row, column)
    if value is None:
        return math.inf
    return float(value) if math.isfinite(value) else math.inf


def pick_best(rows: Sequence[Row], column: str = "lpips") -> int:
    """Index of the row with the lowest ``column`` (the first one on ties).

    The running best starts at +∞, so the first finite score is always taken: the released
    official script started it at 0.0 and never selected anything.
    """
    if not rows:
        raise ValueError("pick_best needs at least one row")
    best, best_score = 0, math.inf
    for i, row in enumerate(rows):
        s = score(row, column)
        if s < best_score:
            best, best_score = i, s
    return best
