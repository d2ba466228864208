"""Measured choices: ``bf16`` / ``threads`` "auto" resolved by timing a few training steps."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from app.train.config import build_model_config
from app.train.distributed import Dist, pick_device
from app.train.losses import RateDistortionLoss
from app.train.precision import TransformAutocast
from app.train.schedule import lmbda_bounds, sample_lmbda
from app.train.step import TrainForward, train_step


def resolve_auto(cfg: dict[str, Any], log: Callable[[str], None],
                 profiler: Callable[..., list[dict[str, Any]]] | None = None) -> dict[str, Any] | None:
    """Replace ``bf16: "auto"`` / ``threads: "auto"`` in ``cfg`` by the fastest measured setting.

    Whether bf16 pays depends on the CPU (native bf16 units or not: 10x slower without them on an
    AVX2-only machine, 1.7x faster with avx512_bf16) and the best thread count on what else runs,
    so both are measured here, on this machine, with the run's own model, batch and crop (a few
    steps each through :func:`profile_steps`). ``bf16`` decides ``channels_last`` too (they are
    profiled together). The table and the choice go to the run log; returns the chosen row (None
    when nothing was "auto").
    """
    auto_bf16, auto_threads = cfg["bf16"] == "auto", cfg["threads"] == "auto"
    if not (auto_bf16 or auto_threads):
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = sorted({1, cores}) if auto_threads else [max(1, int(cfg["threads"]))]
    probe = {**cfg, "bf16": True, "threads": threads[0]}
    rows = (profiler or profile_steps)(probe, threads, 2, 1, log)
    if not auto_bf16:
        want = "fp32" if not cfg["bf16"] else "bf16+channels_last"
        rows = [r for r in rows if r["mode"] == want]
    best = min(rows, key=lambda r: r["median_s"])
    for r in rows:
        log(f"auto profile: {r['mode']:<20} threads {r['threads']}: {r['median_s']:.3f} s/step")
    if auto_bf16:
        cfg["bf16"] = cfg["channels_last"] = best["mode"] != "fp32"
    if auto_threads:
        cfg["threads"] = int(best["threads"])
    cfg["_auto_profile"] = {"rows": rows, "chosen": {"bf16": cfg["bf16"], "threads": cfg["threads"]}}
    log(f"auto: chose bf16={cfg['bf16']} (channels_last={cfg['channels_last']}), "
        f"threads={cfg['threads']} ({best['median_s']:.3f} s/step)")
    return best


def profile_steps(
    cfg: Mapping[str, Any], threads: Sequence[int] = (2, 1), steps: int = 3, rounds: int = 3,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Median seconds per training step of the config's model on random data.

    Compares fp32 against ``bf16 + channels_last`` (transforms only) for each thread count, with
    the config's batch, crop, k_P (LPIPS) and λ range; the combinations are interleaved over
    ``rounds`` so that load from other processes spreads evenly. One warm-up step each.
    """
    from app.models.factory import create_model

    mcfg = build_model_config(cfg)
    device = pick_device(str(cfg["device"]), Dist())
    bs, crop = int(cfg["batch_size"]), int(cfg["crop"])
    uses_text = mcfg["arch"] == "taco"
    variable = bool(mcfg.get("variable_rate"))
    lo, hi = lmbda_bounds(cfg, mcfg)
    k_p = float(cfg["k_P"])
    lpips_mod = None
    if k_p > 0:
        from app.lpips_offline import load_lpips

        lpips_mod = load_lpips(str(cfg["lpips_net"])).to(device)
    g = torch.Generator().manual_seed(0)
    x32 = torch.rand(bs, 3, crop, crop, generator=g).to(device)
    text = torch.randn(bs, int(mcfg["text_len"]), int(mcfg["text_dim"]), generator=g).to(device) \
        if uses_text else None
    runners: dict[str, Callable[[], None]] = {}
    for mode in ("fp32", "bf16+channels_last"):
        fast = mode != "fp32"
        torch.manual_seed(0)
        model = create_model(mcfg).to(device)
        if fast:
            model.to(memory_format=torch.channels_last)
            TransformAutocast(model, cfg["autocast_modules"], device.type, torch.bfloat16)
        model.train()
        named = dict(model.named_parameters())
        main_p = [p for n, p in named.items() if not n.endswith("quantiles")]
        aux_p = [p for n, p in named.items() if n.endswith("quantiles")]
        opt, aux_opt = torch.optim.Adam(main_p, lr=1e-4), torch.optim.Adam(aux_p, lr=1e-3)
        crit = RateDistortionLoss(k_p=k_p, lpips=lpips_mod)
        fwd = TrainForward(model, uses_text)
        x = x32.contiguous(memory_format=torch.channels_last) if fast else x32

        def run(fwd: nn.Module = fwd, crit: RateDistortionLoss = crit, opt: Any = opt,
                aux_opt: Any = aux_opt, main_p: list = main_p, aux_p: list = aux_p,
                x: Tensor = x, step: list = [0]) -> None:  # noqa: B006 - step counter
            lam = sample_lmbda(lo, hi, 0, step[0]) if variable else lo
            step[0] += 1
            train_step(fwd, crit, opt, aux_opt, main_p, aux_p, x, text, lam, variable, None, 1.0)

        runners[mode] = run
    times: dict[tuple[str, int], list[float]] = {(m, t): [] for m in runners for t in threads}
    for (mode, t) in times:  # warm-up
        torch.set_num_threads(t)
        runners[mode]()
    for r in range(rounds):
        for (mode, t), acc in times.items():
            torch.set_num_threads(t)
            for _ in range(steps):
                t0 = time.perf_counter()
                runners[mode]()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                acc.append(time.perf_counter() - t0)
        log(f"profile round {r + 1}/{rounds} done (load average {os.getloadavg()[0]:.1f})")
    rows = []
    for (mode, t), acc in times.items():
        rows.append({"model": mcfg["name"], "mode": mode, "threads": t, "batch": bs, "crop": crop,
                     "k_P": k_p, "median_s": float(np.median(acc)), "min_s": float(min(acc)),
                     "n": len(acc)})
    return rows
