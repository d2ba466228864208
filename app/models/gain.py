"""Gain units for a continuous-rate ("variable rate") model.

Own implementation of the idea of Cui et al., "Asymmetric Gained Deep Image Compression With
Continuous Rate Adaptation" (CVPR 2021): a learned per-channel gain vector scales the latent y right
after the analysis transform, and an inverse gain rescales ŷ before the synthesis transform. One
pair of vectors is learned per λ of a ladder; any λ between two ladder entries uses the geometric
interpolation ``g = g_i^(1-t) · g_{i+1}^t`` with ``t`` the position of log λ between log λ_i and
log λ_{i+1}, which gives a continuous rate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["initial_gains", "interpolate_gain"]

_EPS = 1e-6


def initial_gains(ladder: Sequence[float], channels: int) -> tuple[Tensor, Tensor]:
    """Initial ``(gain, inv_gain)`` tables, shape (L, channels).

    A gain of ``sqrt(λ / λ_ref)`` per ladder entry (λ_ref = geometric mean of the ladder) spreads
    the quantisation step over the ladder from the start (a finer step for a higher λ, the usual
    MSE rule step² ∝ 1/λ), so the rate points separate early in training; the inverse gain is the
    reciprocal.
    """
    lam = torch.tensor(list(ladder), dtype=torch.float64)
    ref = math.exp(float(lam.log().mean()))
    gain = (lam / ref).sqrt().to(torch.float32)
    gain = gain.view(-1, 1).expand(-1, channels).clone()
    return gain, 1.0 / gain


def interpolate_gain(table: Tensor, log_ladder: Tensor, lmbda: Tensor) -> Tensor:
    """Gain vectors for ``lmbda`` (K,) from a (L, M) ``table``: (K, M), geometric interpolation.

    ``log_ladder`` (L,) holds log λ of the table rows, increasing. Values are taken as ``|g|``
    (clamped away from 0) so the gains stay positive whatever the optimiser does. λ outside the
    ladder is clamped to its ends (range checks belong to the caller).
    """
    mag = table.abs().clamp_min(_EPS)
    count = table.shape[0]
    if count == 1:
        return mag.expand(lmbda.shape[0], -1)
    x = lmbda.to(log_ladder).log().clamp(log_ladder[0], log_ladder[-1])
    lower = (torch.searchsorted(log_ladder, x, right=True) - 1).clamp(0, count - 2)
    span = log_ladder[lower + 1] - log_ladder[lower]
    weight = ((x - log_ladder[lower]) / span).to(table.dtype).unsqueeze(1)
    log_mag = mag.log()
    return torch.exp(log_mag[lower] * (1 - weight) + log_mag[lower + 1] * weight)
