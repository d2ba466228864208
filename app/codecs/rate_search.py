"""Finding the λ of a variable-rate model whose real file hits a target bpp.

Both searches work in log λ – log bpp, where a learned codec's rate curve is close to a straight
line (slope ≈ 0.35–0.6 for the embedded models over their range).

* :func:`from_estimate` — nothing is known about this image yet: λ is found on the entropy model's
  own bit estimate (a fraction of an encode) by regula falsi inside the model's λ range, then one
  real encode, and when its bpp is more than 1 % off, one correction from the real size with the
  slope of the final bracket.
* :func:`from_known` — real files of this image are already at hand (the UI coded it at the
  slider's λ a moment ago): the closest one seeds a secant on real sizes, one to three new
  encodes and no estimate at all.

Either way the caller keeps every real file it made and returns the closest one. A codec keeps a
`SeenImage` per image (an `app.lru.LRUCache` of the last `SEEN_IMAGES`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

#: Stop when the real log bpp is this close to the goal (1 %).
REAL_TOLERANCE = 0.01
#: Stop the estimate search when its log bpp is this close (0.2 %).
ESTIMATE_TOLERANCE = 0.002
#: First-step slope d log bpp / d log λ when only one real point is known.
SLOPE_GUESS = 0.45
#: Slopes a secant may use (a flat or noisy pair of points must not fling λ across the range).
SLOPE_LIMITS = (0.15, 1.5)

LogFn = Callable[[float], float]

#: Images whose analysis latent and files a codec keeps for a following bpp search.
SEEN_IMAGES = 2


@dataclass
class SeenImage:
    """What encoding one image (and caption) produced: the gain-free latent, files per λ."""

    latent: Any = None
    files: dict[float, bytes] = field(default_factory=dict)


def _clamp(v: float, lo: float, hi: float) -> float:
    return min(max(v, lo), hi)


def from_estimate(goal: float, lo: float, hi: float, estimate: LogFn, real: LogFn) -> None:
    """Search ``log λ`` in [lo, hi] for log bpp ``goal``; ``real`` is called once or twice."""
    e_lo, e_hi = estimate(lo), estimate(hi)
    lo_r, hi_r = lo, hi
    if goal <= e_lo or goal >= e_hi:
        real(lo if goal <= e_lo else hi)
        return
    x = lo
    for _ in range(8):  # regula falsi on the bracket: log bpp is nearly linear in log λ
        x = lo + (goal - e_lo) * (hi - lo) / (e_hi - e_lo)
        e = estimate(x)
        if abs(e - goal) <= ESTIMATE_TOLERANCE:
            break
        if e < goal:
            lo, e_lo = x, e
        else:
            hi, e_hi = x, e
    got = real(x)
    if abs(got - goal) > REAL_TOLERANCE:
        slope = (e_hi - e_lo) / (hi - lo) if hi > lo else SLOPE_GUESS
        slope = _clamp(slope, *SLOPE_LIMITS)
        real(_clamp(x + (goal - got) / slope, lo_r, hi_r))


def from_known(goal: float, lo: float, hi: float, known: Iterable[tuple[float, float]],
               real: LogFn, steps: int = 3) -> None:
    """Secant search from real ``(log λ, log bpp)`` points of this image: at most ``steps`` calls.

    The first step uses the slope of the two known points nearest the goal, or `SLOPE_GUESS`;
    each later one the slope of the last two real points.
    """
    points = sorted(known, key=lambda p: abs(p[1] - goal))
    if not points:
        raise ValueError("from_known needs at least one real point")
    x0, y0 = points[0]
    slope = SLOPE_GUESS
    if len(points) > 1 and points[1][0] != x0:
        slope = _clamp((points[1][1] - y0) / (points[1][0] - x0), *SLOPE_LIMITS)
    for _ in range(steps):
        if abs(y0 - goal) <= REAL_TOLERANCE:
            return
        x1 = _clamp(x0 + (goal - y0) / slope, lo, hi)
        if x1 == x0:
            return  # at the end of the range
        y1 = real(x1)
        if y1 != y0:
            slope = _clamp((y1 - y0) / (x1 - x0), *SLOPE_LIMITS)
        x0, y0 = x1, y1
