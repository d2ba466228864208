"""One optimisation step: the forward DDP wraps, the loss, one backward, clipping, both optimisers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from app.train.losses import RateDistortionLoss

if TYPE_CHECKING:
    from app.models.elic import ELIC


class TrainForward(nn.Module):
    """The module DDP wraps: model forward plus ``aux_loss()``, so one backward feeds both optimisers."""

    def __init__(self, model: ELIC, uses_text: bool) -> None:
        super().__init__()
        self.model = model
        self.uses_text = uses_text

    def forward(self, x: Tensor, text: Tensor | None, lmbda: float | Tensor | None
                ) -> tuple[dict[str, Any], Tensor]:
        if self.uses_text:
            out = self.model(x, text=text, lmbda=lmbda)
        else:
            out = self.model(x, lmbda=lmbda)
        return out, self.model.aux_loss()


def train_step(
    fwd: nn.Module, criterion: RateDistortionLoss, optimizer: torch.optim.Optimizer,
    aux_optimizer: torch.optim.Optimizer, main_params: Sequence[Tensor],
    aux_params: Sequence[Tensor], x: Tensor, text: Tensor | None, lmbda: float | Tensor,
    variable: bool, text_emb: Tensor | None, clip_grad: float,
    k_p_scale: float | Tensor = 1.0,
) -> tuple[dict[str, Tensor], Tensor, Tensor, bool]:
    """One optimisation step: forward, loss + aux, one backward, clip, both optimisers.

    Returns ``(losses, aux_loss, grad_norm, ok)``; when a gradient is not finite nothing is
    stepped and ``ok`` is False (under DDP the gradients are already all-reduced, so every rank
    takes the same decision).
    """
    optimizer.zero_grad(set_to_none=True)
    aux_optimizer.zero_grad(set_to_none=True)
    out, aux = fwd(x, text, lmbda if variable else None)
    losses = criterion(out, x, lmbda, text_emb, k_p_scale=k_p_scale)
    (losses["loss"] + aux).backward()
    gnorm = torch.nn.utils.clip_grad_norm_(main_params, clip_grad)
    aux_ok = all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in aux_params)
    ok = bool(torch.isfinite(gnorm)) and aux_ok
    if ok:
        optimizer.step()
        aux_optimizer.step()
    return losses, aux, gnorm, ok
