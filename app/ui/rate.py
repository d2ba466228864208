"""Rate control: one slider position (0–100) for a continuous λ range and for a λ ladder."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from app.errors import TacoError
from app.ui.backend import Backend, default_backend
from app.ui.model_sets import ModelSet, pick_model_set

if TYPE_CHECKING:  # pragma: no cover

    from app.codecs.protocol import Codec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RateSpec:
    """How a codec's rate is controlled."""

    kind: Literal["continuous", "ladder", "none"]
    lo: float | None = None
    hi: float | None = None
    ladder: tuple[float, ...] = ()

    @classmethod
    def of(cls, codec: Codec) -> RateSpec:
        rate = codec.capabilities.rate
        if rate.kind == "ladder":
            return cls("ladder", ladder=rate.ladder)
        return cls("continuous", rate.lo, rate.hi)

    @property
    def step(self) -> float:
        """Slider step: 1 for a continuous range, one notch per rung for a ladder."""
        if self.kind == "ladder" and len(self.ladder) > 1:
            return 100.0 / (len(self.ladder) - 1)
        return 1.0

    def lmbda_at(self, position: float) -> float | None:
        """λ for a slider position: log-uniform over a range; the nearest rung of a ladder."""
        p = min(max(float(position), 0.0), 100.0) / 100.0
        if self.kind == "continuous":
            assert self.lo is not None and self.hi is not None
            lam = math.exp(math.log(self.lo) + p * (math.log(self.hi) - math.log(self.lo)))
            return float(f"{lam:.3g}")
        if self.kind == "ladder":
            return self.ladder[round(p * (len(self.ladder) - 1))]
        return None

    def fit(self, lmbda: float | None) -> float | None:
        """The λ this codec offers closest to ``lmbda`` (clamped; nearest rung in log)."""
        if lmbda is None or self.kind == "none":
            return None
        if self.kind == "continuous":
            assert self.lo is not None and self.hi is not None
            return min(max(float(lmbda), self.lo), self.hi)
        return min(self.ladder, key=lambda v: abs(math.log(v / lmbda)))

    def describe(self, position: float) -> str:
        lam = self.lmbda_at(position)
        if self.kind == "continuous":
            return (
                f"λ = {lam:.3g} (variable-rate model, λ from {self.lo:.3g} to {self.hi:.3g}; "
                "larger λ = more bits, better quality)"
            )
        if self.kind == "ladder":
            rungs = ", ".join(f"{v:g}" for v in self.ladder)
            return f"λ = {lam:g} (fixed-rate checkpoints: {rungs})"
        return "this model has a single rate"


def rate_label(
    model_set: ModelSet | str | None, position: float, backend: Backend | None = None
) -> str:
    """The Markdown line under the bitrate slider (loads the TACO model once, then cached)."""
    backend = backend or default_backend()
    try:
        model_set = pick_model_set(model_set)
        codec = backend.load_codec(model_set.taco, allow_random=model_set.allow_random)
    except TacoError as exc:
        return f"Bitrate position {position:.0f}/100 · {exc}"
    return RateSpec.of(codec).describe(position)


def slider_step(model_set: ModelSet | str | None, backend: Backend | None = None) -> float:
    backend = backend or default_backend()
    try:
        model_set = pick_model_set(model_set)
        codec = backend.load_codec(model_set.taco, allow_random=model_set.allow_random)
        return RateSpec.of(codec).step
    except TacoError:
        return 1.0
