"""The per-step schedules: λ sampling and its bounds, the LPIPS weight ramp, the learning rate."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from app.errors import ConfigError

LMBDA_SAMPLINGS = ("loguniform", "power")


def sample_lmbda(lo: float, hi: float, seed: int, step: int, n: int | None = None,
                 sampling: str = "loguniform", power: float = 1.0) -> float | Tensor:
    """λ in [lo, hi], a pure function of (seed, step): every rank draws the same value.

    ``sampling`` "loguniform": log λ uniform in [log lo, log hi]. "power": the position
    ``t = (log λ - log lo) / (log hi - log lo)`` has density ``power · t^(power-1)`` (``t = u^(1/power)``
    for uniform ``u``), so ``power`` > 1 gives the upper rungs more steps (2: the top sixth of the
    log range gets 31 % of the draws instead of 17 %); ``power`` 1 is log-uniform.
    With ``n`` a (n,) tensor of per-sample values is returned.
    """
    if sampling not in LMBDA_SAMPLINGS:
        raise ConfigError(f"lmbda_sampling must be one of {LMBDA_SAMPLINGS}, got {sampling!r}")
    p = float(power) if sampling == "power" else 1.0
    if not p > 0:
        raise ConfigError(f"lmbda_power must be > 0, got {power!r}")
    rng = random.Random(seed * 1_000_033 + step)
    a, b = math.log(lo), math.log(hi)

    def draw() -> float:
        u = rng.random() if p != 1.0 else None
        t = rng.uniform(a, b) if u is None else a + (b - a) * u ** (1.0 / p)
        return math.exp(t)

    if n is None:
        return draw()
    return torch.tensor([draw() for _ in range(n)], dtype=torch.float32)


def lpips_weight_scale(lmbda: float | Tensor, step: int, ramp_steps: int,
                       lmbda_ref: float | None) -> float | Tensor:
    """Multiplier of k_P at ``step``: linear ramp 0 -> 1 over ``ramp_steps`` (step 0 gets 0, step
    ``ramp_steps`` and later 1), times ``λ / lmbda_ref`` when ``lmbda_ref`` is set (per sample when
    ``lmbda`` is a tensor). Returns exactly 1.0 when neither option is used."""
    scale: float | Tensor = 1.0
    if ramp_steps > 0 and step < ramp_steps:
        scale = step / ramp_steps
    if lmbda_ref is not None:
        ref = float(lmbda_ref)
        if not ref > 0:
            raise ConfigError(f"k_P_lmbda_ref must be > 0, got {lmbda_ref!r}")
        scale = (lmbda / ref) * scale
    return scale


def lmbda_bounds(cfg: Mapping[str, Any], mcfg: Mapping[str, Any]) -> tuple[float, float]:
    """``(lo, hi)`` of the λ sampled in training; ``lo == hi`` (the fixed λ) for fixed-rate models.

    Variable rate: the config's ``lmbda_range`` (default: the model's), which must lie inside the
    model's range (the gain units refuse λ outside it). Fixed rate: ``lmbda`` or the model's single
    ladder entry.
    """
    if mcfg.get("variable_rate"):
        lo_hi = cfg.get("lmbda_range") or mcfg.get("lmbda_range")
        if not lo_hi:
            raise ConfigError("variable-rate training needs lmbda_range (config or model)")
        lo, hi = float(lo_hi[0]), float(lo_hi[1])
        if not 0 < lo <= hi:
            raise ConfigError(f"bad lmbda_range {lo_hi}")
        mrange = mcfg.get("lmbda_range")
        if mrange and (lo < mrange[0] * (1 - 1e-6) or hi > mrange[1] * (1 + 1e-6)):
            raise ConfigError(f"lmbda_range {lo_hi} exceeds the model's range {mrange} "
                              "(set model_overrides.lmbda_range / lmbda_ladder)")
        return lo, hi
    fixed = cfg.get("lmbda")
    if fixed is None:
        ladder = mcfg.get("lmbda_ladder") or []
        if len(ladder) != 1:
            raise ConfigError("fixed-rate training needs 'lmbda' (or a one-entry model ladder)")
        fixed = ladder[0]
    return float(fixed), float(fixed)


class MilestoneSchedule:
    """``lr = base · gamma^k``, k = milestones passed; a milestone passes on steps or on time.

    A milestone ``m >= 1`` is an absolute step. A fraction ``0 < m < 1`` passes at ``m·max_steps``
    steps or at ``m·max_minutes`` of cumulative training time, whichever comes first (each only if
    set). Passing is monotone and saved in :meth:`state_dict`.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, milestones: Sequence[float], gamma: float,
                 max_steps: int | None, max_minutes: float | None, warmup_steps: int = 0) -> None:
        self.optimizer = optimizer
        self.warmup_steps = max(0, int(warmup_steps))
        self.gamma = float(gamma)
        self.base_lrs = [float(g["lr"]) for g in optimizer.param_groups]
        self.milestones = sorted(float(m) for m in milestones)
        self.max_steps, self.max_minutes = max_steps, max_minutes
        self.passed = 0

    def _passed(self, m: float, step: int, minutes: float) -> bool:
        if m >= 1:
            return step >= m
        by_steps = self.max_steps is not None and step >= m * self.max_steps
        by_time = self.max_minutes is not None and minutes >= m * self.max_minutes
        return by_steps or by_time

    def update(self, step: int, minutes: float) -> bool:
        """Apply milestones reached at (step, minutes); True when the lr changed."""
        n = max(self.passed, sum(self._passed(m, step, minutes) for m in self.milestones))
        changed = n != self.passed
        self.passed = n
        # linear warm-up: step 0 runs at 1/(W+1) of the rate, step W and later at the full rate
        warm = min(1.0, (step + 1) / (self.warmup_steps + 1)) if self.warmup_steps else 1.0
        for g, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            g["lr"] = base * self.gamma**n * warm
        return changed

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "base_lrs": list(self.base_lrs), "gamma": self.gamma,
                "milestones": list(self.milestones)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.passed = int(state["passed"])
