"""The configured training objective: rate-distortion, LPIPS and the joint CLIP loss, with fallbacks."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from app.errors import MissingModelError
from app.train.losses import JointImageTextLoss, RateDistortionLoss, build_tiny_clip, load_clip


def build_criterion(
    cfg: Mapping[str, Any], device: torch.device, need_lpips_for_eval: bool,
    log: Callable[[str], None],
) -> tuple[RateDistortionLoss, nn.Module | None, JointImageTextLoss | None]:
    """The configured objective, the LPIPS module (also kept for evaluation) and the L_J module.

    k_J > 0 without CLIP weights (none are obtainable offline) falls back to k_J = 0 with a
    logged notice; k_P > 0 without the LPIPS weights raises :class:`MissingModelError`.
    """
    k_p, k_j = float(cfg["k_P"]), float(cfg["k_J"])
    lpips_mod = None
    if k_p > 0 or need_lpips_for_eval:
        try:
            from app.lpips_offline import load_lpips

            lpips_mod = load_lpips(str(cfg["lpips_net"])).to(device)
        except MissingModelError as exc:
            if k_p > 0:
                raise
            log(f"notice: LPIPS unavailable for evaluation ({exc})")
    joint = None
    if k_j > 0:
        if cfg["clip_tiny_random"]:
            import open_clip

            clip_model: nn.Module | None = build_tiny_clip()
            tok: Callable[..., Tensor] | None = open_clip.get_tokenizer("ViT-B-32")
            why = "tiny random CLIP (tests only)"
        else:
            clip_model, tok, why = load_clip(str(cfg["clip_model"]), str(cfg["clip_pretrained"]),
                                             cfg["clip_checkpoint"], device)
        if clip_model is None or tok is None:
            log(f"notice: k_J = {k_j} requested but {why}; training with k_J = 0 "
                "(no CLIP image tower offline)")
            k_j = 0.0
        else:
            log(f"joint loss: {why}, beta {cfg['beta']}, logit scale exp({cfg['logit_scale_log']})")
            joint = JointImageTextLoss(clip_model.to(device), tok, beta=float(cfg["beta"]),
                                       logit_scale_log=float(cfg["logit_scale_log"]))
    criterion = RateDistortionLoss(k_p=k_p, k_j=k_j, lpips=lpips_mod if k_p > 0 else None,
                                   joint=joint, lpips_normalize=bool(cfg["lpips_normalize"]))
    return criterion, lpips_mod, joint
