"""Evaluation of held-out training-source images through real bitstreams."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from app.train.losses import psnr_from_mse

if TYPE_CHECKING:
    from app.models.elic import ELIC


def evaluate_bitstreams(
    model: ELIC,
    images: Sequence[tuple[str, np.ndarray, str]],
    lmbdas: Sequence[float | None],
    text_fn: Callable[[str], Tensor] | None,
    device: torch.device,
    lpips_fn: nn.Module | None = None,
) -> list[dict[str, Any]]:
    """Compress and decompress each image at each λ; bpp from the real bytes, PSNR on 8-bit output.

    ``model`` must be a fresh eval-mode copy (``update(force=True)`` is called here). Images are
    zero-padded bottom/right to a multiple of 64 and cropped back, as the official evaluation
    does. bpp counts the entropy-coded y and z strings (the container header, ~30 B, is not
    included).
    """
    model.eval()
    model.update(force=True)
    rows: list[dict[str, Any]] = []
    with torch.no_grad():
        for name, arr, caption in images:
            h, w = arr.shape[:2]
            x = torch.from_numpy(np.array(arr)).permute(2, 0, 1).float().div(255).unsqueeze(0).to(device)
            ph, pw = (-h) % 64, (-w) % 64
            xp = F.pad(x, (0, pw, 0, ph))
            text = text_fn(caption).to(device) if text_fn is not None else None
            for lam in lmbdas:
                kw: dict[str, Any] = {} if lam is None else {"lmbda": lam}
                t0 = time.perf_counter()
                enc = model.compress(xp, text=text, **kw) if text is not None else model.compress(xp, **kw)
                t1 = time.perf_counter()
                dec = model.decompress(enc["strings"], enc["shape"], **kw)
                t2 = time.perf_counter()
                nbytes = sum(len(s) for group in enc["strings"] for s in group)
                x_hat = dec["x_hat"][..., :h, :w].clamp(0, 1)
                x8 = (x_hat * 255).round() / 255
                mse = float(F.mse_loss(x8, x))
                row = {"image": name, "lmbda": lam, "bytes": nbytes, "bpp": 8.0 * nbytes / (h * w),
                       "psnr": psnr_from_mse(mse), "enc_s": t1 - t0, "dec_s": t2 - t1}
                if lpips_fn is not None:
                    row["lpips"] = float(lpips_fn(x8, x, normalize=True).mean())
                rows.append(row)
    return rows


def eval_lmbdas(cfg: Mapping[str, Any], variable: bool, lo: float, hi: float) -> list[float | None]:
    """The λ evaluated: the config's ``eval_lmbdas``, else lo, geometric mid and hi of the trained
    range (variable rate), else the model's own λ (``None``)."""
    if cfg["eval_lmbdas"]:
        return [float(v) for v in cfg["eval_lmbdas"]]
    if variable:
        return [lo, math.sqrt(lo * hi), hi] if hi > lo else [lo]
    return [None]


def mean_rows(rows: Sequence[Mapping[str, Any]], lmbdas: Sequence[float | None]
              ) -> tuple[list[dict[str, Any]], str]:
    """Per-λ means over the images (``image`` "MEAN") and a one-line summary of them."""
    means: list[dict[str, Any]] = []
    parts = []
    for lam in lmbdas:
        sel = [r for r in rows if r["lmbda"] == lam]
        mb = sum(r["bpp"] for r in sel) / len(sel)
        mp = sum(r["psnr"] for r in sel) / len(sel)
        row = {"lmbda": lam, "image": "MEAN", "bpp": mb, "psnr": mp}
        if sel and "lpips" in sel[0]:
            row["lpips"] = sum(r["lpips"] for r in sel) / len(sel)
        means.append(row)
        lam_s = "default" if lam is None else f"{lam:.4g}"
        parts.append(f"λ={lam_s}: {mb:.3f} bpp {mp:.2f} dB"
                     + (f" LPIPS {row['lpips']:.3f}" if "lpips" in row else ""))
    return means, "; ".join(parts)
