"""``python -m app train --config CONFIG [--resume] [--max-steps N] [--max-minutes M] [--out DIR]``.

Trains an embedded ELIC or TACO with the official objective and recipe, scaled down for CPU and
without the CLIP joint loss offline:

* objective ``bpp + λ·255²·MSE`` (ELIC) plus ``k_P·LPIPS + k_J·L_J`` (TACO), see
  :mod:`app.train.losses`; λ is sampled **once per step, log-uniformly** over ``lmbda_range`` for
  variable-rate models (one set of weights covers the whole slider), identically on every rank;
* Adam (``lr``) on every parameter except ``*.quantiles``; auxiliary Adam (``aux_lr``, 1e-3) on the
  quantiles, stepped every iteration; gradient-norm clip (``clip_grad``, 1.0) on the main
  parameters; learning-rate drops by ``lr_gamma`` at ``lr_milestones`` (steps ≥ 1, or fractions of
  ``max_steps`` / ``max_minutes``); the aux loss is computed inside the (DDP-wrapped) forward, so a
  single backward feeds both optimisers and DDP averages the quantile gradients too;
* CPU speed (together about 1.7× faster per step, measured on 2 cores): ``channels_last`` and
  bf16 ``torch.autocast`` on the transforms only (``g_a``, ``g_s``, ``h_a``, ``h_s`` by default:
  their forward is wrapped in place and returns float32), entropy models and likelihoods in
  float32; ``threads`` → ``torch.set_num_threads``;
* resumable: ``OUT/state.pt`` holds weights, both optimisers, the schedule, step, cumulative
  training time and python/numpy/torch RNG states (tensors and plain containers only; loaded with
  ``weights_only=True``), written atomically every ``save_every_steps`` / ``save_every_minutes``,
  at the end, on SIGINT/SIGTERM and when ``max_minutes`` (cumulative over resumes) runs out;
  final weights go to ``OUT/<model name>.safetensors`` (+ ``model_config.json``);
* logs: ``OUT/log.csv`` (step, λ, loss, bpp, mse, psnr, lpips, joint, aux, grad norm, lr, s/step,
  wall) and ``OUT/train.log``; periodic evaluation of held-out *training-source* images through
  real bitstreams (``update(force=True)``, ``compress``/``decompress``) at 2–3 λ into
  ``OUT/eval.csv``. Kodak and coco_val2017 are refused everywhere (:mod:`app.train.data`);
* DDP under ``torchrun`` (``WORLD_SIZE`` > 1): gloo on CPU, NCCL on CUDA, data sharded per rank,
  rank 0 alone logs, saves and evaluates; at the end every rank's weight checksum is gathered into
  ``OUT/ddp_check.json``.

Configs are JSON (``app/configs/train/*.json``; keys and defaults in :data:`DEFAULTS`). Relative data
paths resolve against ``data_root`` (default ``../shared/data`` next to the repository, or
``$TACO_DATA_ROOT``).
"""

from __future__ import annotations

import argparse
import csv
import functools
import hashlib
import inspect
import json
import math
import os
import random
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from app.errors import ConfigError, MissingModelError
from app.eval_dist import DistInfo
from app.train.data import (
    CaptionedImageDataset,
    InfiniteShardedSampler,
    collate,
    load_eval_images,
    records_from_sources,
)
from app.train.losses import (
    OFFICIAL_BETA,
    OFFICIAL_LOGIT_SCALE_LOG,
    JointImageTextLoss,
    RateDistortionLoss,
    build_tiny_clip,
    load_clip,
    psnr_from_mse,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
TRAIN_CONFIG_DIR = REPO_ROOT / "app" / "configs" / "train"
STATE_FORMAT = "taco-train-state/1"

#: Every training-config key with its default. Unknown keys are refused (typos fail loudly).
DEFAULTS: dict[str, Any] = {
    "name": None,  # run name (default: config file stem)
    "model": None,  # model config name ("elic-small") or an inline model-config dict
    "model_overrides": {},  # merged into the model config (e.g. {"variable_rate": true})
    "out": None,  # output folder (default runs/<name>); --out wins
    "data_root": None,  # base of relative data paths; default $TACO_DATA_ROOT or ../shared/data
    "sources": [],  # training sources, see app.train.data.records_from_sources
    "crop": 256,
    "cache_short_side": 384,  # RAM cache: short side of every image capped to this (data.py)
    "hflip": True,
    "workers": 0,  # DataLoader workers: 0 or 1 on a 2-core machine
    "batch_size": 8,  # per rank
    "lr": 1e-4,
    "aux_lr": 1e-3,
    "clip_grad": 1.0,
    "lr_milestones": [0.8],  # >= 1: step; (0, 1): fraction of max_steps and/or max_minutes
    "lr_gamma": 0.1,
    "lr_warmup_steps": 0,  # linear warm-up of the main lr over the first N steps of this run
    "lmbda": None,  # fixed λ (fixed-rate models; default: the model's ladder entry)
    "lmbda_range": None,  # [lo, hi] for variable rate (default: the model config's range)
    "per_sample_lmbda": False,  # one λ per sample (needs model support) instead of per step
    "lmbda_sampling": "loguniform",  # "loguniform" | "power" (weighted to high λ, see sample_lmbda)
    "lmbda_power": 2.0,  # exponent of the "power" sampling (1 = log-uniform)
    "k_P": 0.0,  # LPIPS weight (standard normalize=True convention)
    "k_P_ramp_steps": 0,  # LPIPS weight ramps linearly from 0 to k_P over the first N steps
    "k_P_lmbda_ref": None,  # a λ: each sample's LPIPS weight is k_P·λ/ref (constant LPIPS/MSE ratio)
    "k_J": 0.0,  # joint CLIP loss weight (set to 0 with a notice when CLIP is unavailable)
    "lpips_net": "alex",
    "lpips_normalize": True,  # False = the official [0, 1]-without-normalize convention
    "beta": OFFICIAL_BETA,
    "logit_scale_log": OFFICIAL_LOGIT_SCALE_LOG,
    "clip_model": "ViT-B-32",
    "clip_pretrained": "openai",
    "clip_checkpoint": None,  # local open_clip weight file
    "clip_tiny_random": False,  # tests only: a tiny random open_clip model (no download)
    "text_encoder": None,  # default: the model config's text_encoder (TACO only)
    "init_from": None,  # safetensors / state.pt to initialise from (matching keys)
    "init_map": "auto",  # "auto" | "elic->taco" | "none"
    "bf16": True,  # bf16 autocast on the transforms; "auto": profile fp32 vs bf16 first (resolve_auto)
    "channels_last": True,
    "autocast_modules": ["g_a", "g_s", "h_a", "h_s"],
    "threads": 2,  # torch.set_num_threads (per rank); "auto": profile 1 vs all cores first
    "device": "auto",  # "auto" | "cpu" | "cuda" | "cuda:N"
    "seed": 100,
    "max_steps": 10000,
    "max_minutes": None,  # cumulative wall-clock budget over resumes
    "save_every_steps": 500,
    "save_every_minutes": 10.0,
    "log_every": 20,
    "eval_images": [],  # held-out images (paths under data_root), excluded from training
    "eval_captions": {},  # optional captions for them
    "eval_lmbdas": None,  # default: lo, geometric mid, hi of the range (or the fixed λ)
    "eval_every_steps": 2000,
    "eval_max_side": 512,
    "eval_at_end": True,
    "ddp_find_unused": False,
    "max_bad_steps": 20,  # consecutive non-finite steps before giving up
}


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


def resolve_config_path(name_or_path: str) -> Path:
    """A path to a JSON file, or the name of a shipped config in ``app/configs/train``."""
    p = Path(name_or_path).expanduser()
    if p.is_file():
        return p
    shipped = TRAIN_CONFIG_DIR / f"{name_or_path}.json"
    if shipped.is_file():
        return shipped
    avail = ", ".join(sorted(q.stem for q in TRAIN_CONFIG_DIR.glob("*.json")))
    raise ConfigError(f"training config {name_or_path!r} not found (shipped: {avail})")


def load_train_config(name_or_path: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Load a training config, fill defaults, apply ``overrides``, validate."""
    path = resolve_config_path(name_or_path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read training config {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"training config {path} is not a JSON object")
    raw = {k: v for k, v in raw.items() if not k.startswith("_")}  # "_comment" keys
    cfg = {**DEFAULTS, **raw, **dict(overrides or {})}
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"training config {path.name}: unknown keys {unknown}")
    if cfg["name"] is None:
        cfg["name"] = path.stem
    if cfg["model"] is None:
        raise ConfigError(f"training config {path.name}: 'model' is required")
    if int(cfg["workers"]) not in (0, 1, 2):
        raise ConfigError("workers must be 0, 1 or 2")
    if cfg["crop"] % 64:
        raise ConfigError(f"crop must be a multiple of 64, got {cfg['crop']}")
    cfg["_config_path"] = str(path)
    return cfg


def default_data_root() -> Path:
    env = os.environ.get("TACO_DATA_ROOT")
    return Path(env) if env else (REPO_ROOT.parent / "shared" / "data")


def data_root_of(cfg: Mapping[str, Any]) -> Path:
    """The config's ``data_root`` (relative to the repository root), or the default."""
    if cfg.get("data_root") is None:
        return default_data_root()
    p = Path(str(cfg["data_root"])).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p


def build_model_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    from app.models.factory import load_config

    try:
        from app.models.config import validate_config
    except ImportError:  # pragma: no cover - older factory layout
        validate_config = None  # type: ignore[assignment]
    spec = cfg["model"]
    mcfg = dict(spec) if isinstance(spec, dict) else dict(load_config(spec))
    mcfg.update(cfg.get("model_overrides") or {})
    return validate_config(mcfg) if validate_config is not None else mcfg


# --------------------------------------------------------------------------------------------
# Distributed helpers
# --------------------------------------------------------------------------------------------


#: Process-group facts for this process (world 1 without torchrun): the same record as eval's.
Dist = DistInfo


def init_distributed(device_kind: str) -> Dist:
    """Initialise torch.distributed when launched by torchrun (``WORLD_SIZE`` > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    backend = "nccl" if device_kind == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def pick_device(spec: str, d: Dist) -> torch.device:
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cuda":
        spec = f"cuda:{d.local_rank}"
    dev = torch.device(spec)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device 'cuda' requested but CUDA is not available")
        torch.cuda.set_device(dev)
    return dev


# --------------------------------------------------------------------------------------------
# Mixed precision on the transforms only
# --------------------------------------------------------------------------------------------


class TransformAutocast:
    """Run selected sub-modules (the transforms) under ``torch.autocast`` with float32 outputs.

    Each module's ``forward`` is replaced **on the instance** (state-dict keys do not change) by a
    wrapper that, while :attr:`enabled`, runs the original forward under autocast and casts every
    floating output back to float32; the entropy models, context model and likelihoods therefore
    stay in float32. Disable it (``enabled = False``) for real-bitstream evaluation.
    """

    def __init__(self, model: nn.Module, names: Sequence[str], device_type: str,
                 dtype: torch.dtype = torch.bfloat16) -> None:
        self.enabled = True
        self.device_type, self.dtype = device_type, dtype
        self.wrapped: list[str] = []
        self.missing: list[str] = []
        for name in names:
            mod = getattr(model, name, None)
            if not isinstance(mod, nn.Module):
                self.missing.append(name)
                continue
            orig = mod.forward
            mod.forward = functools.partial(self._run, orig)  # type: ignore[method-assign]
            self.wrapped.append(name)

    def _run(self, orig: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self.enabled:
            return orig(*args, **kwargs)
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = orig(*args, **kwargs)
        return _to_float32(out)


def _to_float32(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.float() if obj.is_floating_point() and obj.dtype != torch.float32 else obj
    if isinstance(obj, tuple):
        return tuple(_to_float32(o) for o in obj)
    if isinstance(obj, list):
        return [_to_float32(o) for o in obj]
    if isinstance(obj, dict):
        return {k: _to_float32(v) for k, v in obj.items()}
    return obj


class TrainForward(nn.Module):
    """The module DDP wraps: model forward plus ``aux_loss()``, so one backward feeds both optimisers."""

    def __init__(self, model: nn.Module, uses_text: bool) -> None:
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


# --------------------------------------------------------------------------------------------
# λ sampling and the learning-rate schedule
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Checkpoints: state.pt (resumable) and weight initialisation
# --------------------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """python / numpy / torch (and CUDA) RNG states as weights_only-loadable objects."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": np_state[0],
            "key": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, fsync, then ``os.replace`` (never a half-written file)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_state(path: Path) -> dict[str, Any]:
    """Load a ``state.pt`` with ``weights_only=True`` and check its format tag."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ConfigError(f"{path} is not a training state ({STATE_FORMAT})")
    return state


def _cpu_state_dict(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", memory_format=torch.contiguous_format).clone()
            for k, v in model.state_dict().items()}


#: ELIC g_a Sequential index -> TACO g_a index (the adapter sits at TACO 8, 14, 15).
ELIC_TO_TACO_GA: dict[int, int] = {
    **{i: i for i in range(8)}, 8: 9, 9: 10, 10: 11, 11: 12, 12: 13, 13: 16, 14: 17,
}
_GA_INDEX = re.compile(r"^(g_a\.(?:[A-Za-z_]\w*\.)*?)(\d+)(\..*)$")


def map_elic_to_taco_key(key: str) -> str:
    """Rename an ELIC ``g_a`` key to its TACO index (other keys unchanged)."""
    m = _GA_INDEX.match(key)
    if not m:
        return key
    idx = int(m.group(2))
    if idx not in ELIC_TO_TACO_GA:
        return key
    return f"{m.group(1)}{ELIC_TO_TACO_GA[idx]}{m.group(3)}"


def read_weights(path: Path) -> dict[str, Tensor]:
    """Tensors of a ``.safetensors`` file or of a training ``state.pt`` (its ``model`` entry)."""
    if not path.is_file():
        raise MissingModelError(f"init_from file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and state.get("format") == STATE_FORMAT:
        return dict(state["model"])
    if isinstance(state, dict) and "state_dict" in state:  # official-style checkpoint
        return {k.removeprefix("module."): v for k, v in state["state_dict"].items()}
    if isinstance(state, dict) and all(isinstance(v, Tensor) for v in state.values()):
        return dict(state)
    raise ConfigError(f"cannot find model weights in {path}")


def source_ladder(path: Path) -> list[float] | None:
    """The λ ladder of the model config stored with ``path`` (safetensors metadata or state.pt)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
            mcfg = json.loads(meta.get("config") or "{}")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            mcfg = state.get("model_config") or {} if isinstance(state, dict) else {}
    except (OSError, ValueError, RuntimeError):
        return None
    ladder = mcfg.get("lmbda_ladder")
    return [float(v) for v in ladder] if ladder else None


def regrid_gain_table(table: Tensor, src_ladder: Sequence[float], tgt_ladder: Sequence[float]
                      ) -> Tensor:
    """A (len(tgt_ladder), M) gain table from a trained (len(src_ladder), M) one.

    log |g| is interpolated linearly in log λ between the source rows (the model's own geometric
    interpolation, so every λ inside the source ladder gets exactly the gain it had) and
    extrapolated linearly beyond its ends from the two outermost rows (a new top rung continues the
    trained step-size trend instead of restarting from the initial gains).
    """
    if table.shape[0] != len(src_ladder):
        raise ConfigError(f"gain table has {table.shape[0]} rows for a {len(src_ladder)}-entry ladder")
    logm = table.detach().abs().clamp_min(1e-6).double().log()
    xs = torch.tensor([math.log(v) for v in src_ladder], dtype=torch.float64)
    rows = []
    for lam in tgt_ladder:
        x = math.log(lam)
        if len(xs) == 1:
            rows.append(logm[0])
            continue
        i = int(torch.searchsorted(xs, torch.tensor(x, dtype=torch.float64), right=True)) - 1
        i = min(max(i, 0), len(xs) - 2)
        t = (x - float(xs[i])) / float(xs[i + 1] - xs[i])
        rows.append(logm[i] * (1 - t) + logm[i + 1] * t)
    return torch.stack(rows).exp().to(table.dtype)


def init_from_weights(model: nn.Module, source: Mapping[str, Tensor], mode: str = "auto",
                      src_ladder: Sequence[float] | None = None) -> dict[str, Any]:
    """Copy every source tensor whose (mapped) name and shape match into ``model``.

    ``mode`` "elic->taco" renames ELIC ``g_a`` indices to TACO's (0-7→0-7, 8→9, 9→10, 10-12→11-13,
    13→16, 14→17); "auto" does so when the target has adapter keys (``*.gamma`` under ``g_a``) and
    the source has none. Adapter gates ``gamma`` not loaded are set to 0. With ``src_ladder`` (the
    source model's λ ladder) and a variable-rate target whose ladder differs, the ``gain`` /
    ``inv_gain`` tables are regridded onto the target ladder (:func:`regrid_gain_table`) instead of
    being left at their initial values. Returns a report dict (``gains_regridded``).
    """
    target = model.state_dict()
    tgt_ladder = (getattr(model, "cfg", None) or {}).get("lmbda_ladder") or []
    regridded: list[str] = []
    if src_ladder is not None and tgt_ladder and list(src_ladder) != list(tgt_ladder):
        source = dict(source)
        for key in ("gain", "inv_gain"):
            if key in source and key in target:
                source[key] = regrid_gain_table(source[key], src_ladder, tgt_ladder)
                regridded.append(key)
    tgt_has_adapter = any(k.startswith("g_a.") and k.endswith(".gamma") for k in target)
    src_has_adapter = any(k.startswith("g_a.") and k.endswith(".gamma") for k in source)
    remap = mode == "elic->taco" or (mode == "auto" and tgt_has_adapter and not src_has_adapter)
    loaded: dict[str, Tensor] = {}
    mismatched: list[str] = []
    unused: list[str] = []
    for k, v in source.items():
        name = map_elic_to_taco_key(k) if remap else k
        if name not in target:
            unused.append(k)
        elif tuple(target[name].shape) != tuple(v.shape):
            mismatched.append(k)
        else:
            loaded[name] = v
    model.load_state_dict(loaded, strict=False)
    zeroed = []
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma") and name.startswith("g_a.") and name not in loaded:
                p.zero_()
                zeroed.append(name)
    not_loaded = [k for k in target if k not in loaded]
    return {"remapped": remap, "loaded": len(loaded), "mismatched": mismatched,
            "unused": unused, "not_loaded": not_loaded, "gamma_zeroed": zeroed,
            "gains_regridded": regridded}


# --------------------------------------------------------------------------------------------
# Evaluation through real bitstreams
# --------------------------------------------------------------------------------------------


def evaluate_bitstreams(
    model: nn.Module,
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


# --------------------------------------------------------------------------------------------
# Logging
# --------------------------------------------------------------------------------------------


class RunLog:
    """Rank-0 text log (stdout + ``train.log``) and CSV writers; silent on other ranks."""

    def __init__(self, out: Path | None, active: bool) -> None:
        self.out, self.active = out, active
        self._fh = open(out / "train.log", "a", encoding="utf-8") if active and out else None

    def __call__(self, msg: str) -> None:
        if not self.active:
            return
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        if self._fh:
            self._fh.write(line + "\n")
            self._fh.flush()

    def csv(self, name: str, row: Mapping[str, Any], fields: Sequence[str]) -> None:
        if not self.active or self.out is None:
            return
        path = self.out / name
        new = not path.exists()
        with open(path, "a", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(fields), extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow({k: _fmt(row.get(k)) for k in fields})

    def close(self) -> None:
        if self._fh:
            self._fh.close()


def truncate_csv(path: Path, max_step: int) -> None:
    """Keep only the rows of a log CSV whose ``step`` is <= ``max_step`` (used on resume)."""
    if not path.is_file():
        return
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows or "step" not in rows[0]:
        return
    col = rows[0].index("step")
    keep = [rows[0]] + [r for r in rows[1:] if r and int(float(r[col])) <= max_step]
    if len(keep) != len(rows):
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows(keep)
        os.replace(tmp, path)


def _fmt(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


LOG_FIELDS = ["step", "lmbda", "loss", "bpp", "mse", "psnr", "lpips", "joint", "aux",
              "grad_norm", "lr", "s_per_step", "wall_s"]
EVAL_FIELDS = ["step", "lmbda", "image", "bytes", "bpp", "psnr", "lpips", "enc_s", "dec_s"]


# --------------------------------------------------------------------------------------------
# Text states
# --------------------------------------------------------------------------------------------


def _captions_digest(captions: Sequence[str], tag: str) -> str:
    h = hashlib.sha256(tag.encode())
    for c in captions:
        h.update(c.encode("utf-8", "surrogatepass") + b"\x00")
    return h.hexdigest()[:16]


def precompute_text_states(
    encode: Callable[[list[str]], Tensor], captions: Sequence[str], cache: Path | None,
    tag: str, log: Callable[[str], None], chunk: int = 64, write: bool = True,
) -> Tensor:
    """(N, L, D) states of every caption, computed once (and cached in ``cache`` if given).

    The cache is reused only when it holds exactly these captions (digest); ``write=False``
    (DDP ranks > 0) only reads it.
    """
    digest = _captions_digest(captions, tag)
    if cache is not None and cache.is_file():
        data = torch.load(cache, map_location="cpu", weights_only=True)
        if data.get("digest") == digest:
            log(f"text: {len(captions)} {tag} caption states loaded from {cache.name}")
            return data["states"]
    t0 = time.perf_counter()
    parts = [encode(list(captions[i : i + chunk])).float().cpu() for i in range(0, len(captions), chunk)]
    states = torch.cat(parts) if parts else torch.empty(0)
    log(f"text: encoded {len(captions)} captions with {tag} in {time.perf_counter() - t0:.1f} s "
        f"-> {tuple(states.shape)} ({states.numel() * 4 / 2**20:.0f} MiB)")
    if cache is not None and write:
        atomic_torch_save({"digest": digest, "states": states}, cache)
    return states


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


# --------------------------------------------------------------------------------------------
# The training run
# --------------------------------------------------------------------------------------------


class _StopFlag:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint and exits at the next step."""

    def __init__(self) -> None:
        self.raised = False
        self._old: dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread
                pass

    def _handler(self, signum: int, frame: Any) -> None:
        if self.raised:  # second signal: give up immediately
            raise KeyboardInterrupt
        self.raised = True

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _param_checksum(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        if v.is_floating_point():
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()[:16]


def train(cfg: dict[str, Any], out: Path, resume: bool = False) -> dict[str, Any]:
    """Run (or resume) training as configured; returns a summary dict (rank 0 meaningful)."""
    from app.models.factory import create_model, save_weights

    dev_kind = "cuda" if (cfg["device"] == "auto" and torch.cuda.is_available()) or str(
        cfg["device"]).startswith("cuda") else "cpu"
    d = init_distributed(dev_kind)
    device = pick_device(str(cfg["device"]), d)
    threads_before = torch.get_num_threads()
    if d.enabled and "auto" in (cfg["bf16"], cfg["threads"]):
        raise ConfigError("bf16/threads 'auto' profile one process; under torchrun set them explicitly")
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
    if d.enabled:
        torch.distributed.barrier()
    log = RunLog(out, d.main)
    resolve_auto(cfg, log)
    torch.set_num_threads(max(1, int(cfg["threads"])))
    stop = _StopFlag()
    stop.install()
    try:
        return _train(cfg, out, resume, d, device, log, stop, create_model, save_weights)
    finally:
        stop.restore()
        log.close()
        torch.set_num_threads(threads_before)  # in-process callers (tests) keep their setting
        if d.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _train(cfg: dict[str, Any], out: Path, resume: bool, d: Dist, device: torch.device,
           log: RunLog, stop: _StopFlag, create_model: Callable[..., nn.Module],
           save_weights: Callable[..., Any]) -> dict[str, Any]:
    t_start = time.perf_counter()
    seed = int(cfg["seed"])
    mcfg = build_model_config(cfg)
    arch = mcfg.get("arch", "elic")
    uses_text = arch == "taco"
    variable = bool(mcfg.get("variable_rate", False))
    log(f"run {cfg['name']}: model {mcfg['name']} ({arch}, N={mcfg['N']}, M={mcfg['M']}, "
        f"variable_rate={variable}), device {device}, world {d.world}, threads "
        f"{torch.get_num_threads()}, out {out}")

    # ---- λ -------------------------------------------------------------------------------
    lo, hi = lmbda_bounds(cfg, mcfg)

    # ---- data ----------------------------------------------------------------------------
    data_root = data_root_of(cfg)
    eval_items = list(cfg["eval_images"] or [])
    exclude = [(data_root / p) if not Path(p).is_absolute() else Path(p) for p in eval_items]
    records = records_from_sources(cfg["sources"], data_root=data_root, exclude=exclude)
    dataset = CaptionedImageDataset(records, crop=int(cfg["crop"]),
                                    cache_short_side=cfg["cache_short_side"],
                                    hflip=bool(cfg["hflip"]), log=log)
    # every rank loads the (few, small) eval images: their captions join the text-state cache,
    # which must be identical on all ranks; only rank 0 evaluates
    eval_images = load_eval_images(eval_items, data_root, cfg["eval_captions"],
                                   cfg["eval_max_side"]) if eval_items else []

    # ---- model ---------------------------------------------------------------------------
    torch.manual_seed(seed)  # identical initial weights on every rank (DDP broadcasts anyway)
    model = create_model(mcfg)
    n_params = sum(p.numel() for p in model.parameters())
    named = dict(model.named_parameters())
    aux_names = [n for n in named if n.endswith("quantiles")]
    main_names = [n for n in named if not n.endswith("quantiles") and named[n].requires_grad]
    if not aux_names:
        raise ConfigError("the model has no *.quantiles parameters (EntropyBottleneck expected)")
    log(f"model: {n_params / 1e6:.2f} M parameters ({len(main_names)} main / {len(aux_names)} aux tensors)")

    state: dict[str, Any] | None = None
    state_path = out / "state.pt"
    if resume and state_path.is_file():
        state = load_state(state_path)
        if state.get("model_config", {}).get("name") != mcfg["name"]:
            raise ConfigError(f"{state_path} was trained with model "
                              f"{state.get('model_config', {}).get('name')!r}, not {mcfg['name']!r}")
        model.load_state_dict(state["model"])
        log(f"resume: step {state['step']} from {state_path}")
        if d.main:  # drop log rows written after the checkpoint (they will be redone)
            for name in ("log.csv", "eval.csv"):
                truncate_csv(out / name, int(state["step"]))
    elif resume:
        log(f"resume: no {state_path.name} in {out}; starting from scratch")
    if state is None and cfg["init_from"]:
        src = Path(str(cfg["init_from"])).expanduser()
        src = src if src.is_absolute() else REPO_ROOT / src
        rep = init_from_weights(model, read_weights(src), str(cfg["init_map"]),
                                src_ladder=source_ladder(src) if variable else None)
        log(f"init_from {src.name}: {rep['loaded']} tensors copied (g_a remapped ELIC->TACO: "
            f"{rep['remapped']}), {len(rep['mismatched'])} shape mismatches, "
            f"{len(rep['unused'])} unused, {len(rep['not_loaded'])} left at init "
            f"(adapter gates zeroed: {len(rep['gamma_zeroed'])})"
            + (f"; gain tables regridded onto the ladder {mcfg['lmbda_ladder']}"
               if rep["gains_regridded"] else ""))
        if rep["mismatched"]:
            log(f"init_from: shape mismatches {rep['mismatched'][:6]}")

    model.to(device)
    use_cl = bool(cfg["channels_last"])
    if use_cl:
        model.to(memory_format=torch.channels_last)
    model.train()
    amp = None
    if cfg["bf16"]:
        amp = TransformAutocast(model, cfg["autocast_modules"], device.type, torch.bfloat16)
        log(f"bf16 autocast on {amp.wrapped}" + (f" (not found: {amp.missing})" if amp.missing else ""))

    # ---- text states ---------------------------------------------------------------------
    captions = dataset.captions()
    for _, _, c in eval_images:
        if c not in captions:
            captions.append(c)
    cap_index = {c: i for i, c in enumerate(captions)}
    text_bank: Tensor | None = None
    kind = cfg["text_encoder"] or mcfg.get("text_encoder")
    if uses_text:
        from app.text import get_text_encoder

        enc = get_text_encoder(kind)
        cache = out / f"text_states_{kind}.pt"
        if d.enabled and not d.main:
            torch.distributed.barrier()  # let rank 0 write the cache first
        text_bank = precompute_text_states(enc.encode, captions, cache, kind, log, write=d.main)
        if d.enabled and d.main:
            torch.distributed.barrier()
        if text_bank.shape[-1] != mcfg.get("text_dim"):
            raise ConfigError(f"text encoder {kind!r} gives dim {text_bank.shape[-1]}, model "
                              f"expects text_dim {mcfg.get('text_dim')}")

    # ---- losses --------------------------------------------------------------------------
    criterion, lpips_mod, joint = build_criterion(cfg, device, need_lpips_for_eval=d.main, log=log)
    k_p, k_j = criterion.k_p, criterion.k_j
    clip_text = joint.embed_text(captions).cpu() if joint is not None else None

    # ---- optimisers, schedule ------------------------------------------------------------
    main_params = [named[n] for n in main_names]
    aux_params = [named[n] for n in aux_names]
    optimizer = torch.optim.Adam(main_params, lr=float(cfg["lr"]))
    aux_optimizer = torch.optim.Adam(aux_params, lr=float(cfg["aux_lr"]))
    max_steps = int(cfg["max_steps"]) if cfg["max_steps"] is not None else None
    max_minutes = float(cfg["max_minutes"]) if cfg["max_minutes"] is not None else None
    schedule = MilestoneSchedule(optimizer, cfg["lr_milestones"] or [], float(cfg["lr_gamma"]),
                                 max_steps, max_minutes, int(cfg["lr_warmup_steps"] or 0))
    step = 0
    train_seconds = 0.0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        aux_optimizer.load_state_dict(state["aux_optimizer"])
        schedule.load_state_dict(state["schedule"])
        step = int(state["step"])
        train_seconds = float(state["train_seconds"])
        if d.main:
            set_rng_state(state["rng"])
    else:
        random.seed(seed + d.rank)
        np.random.seed((seed + d.rank) % 2**32)
    schedule.update(step, train_seconds / 60)

    fwd: nn.Module = TrainForward(model, uses_text)
    if d.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        # buffers (entropy-coder tables) are rank-local: never synchronised during training
        sync_kw = ({"forward_sync_buffers": False}
                   if "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters
                   else {"broadcast_buffers": False})
        fwd = DDP(fwd, device_ids=[device.index] if device.type == "cuda" else None,
                  find_unused_parameters=bool(cfg["ddp_find_unused"]), **sync_kw)

    # ---- data loader ---------------------------------------------------------------------
    bs = int(cfg["batch_size"])
    sampler = InfiniteShardedSampler(len(dataset), seed=seed, rank=d.rank, world=d.world,
                                     start=step * bs)
    workers = int(cfg["workers"])
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=bs, sampler=sampler, num_workers=workers, collate_fn=collate,
        drop_last=True, pin_memory=device.type == "cuda", persistent_workers=workers > 0,
        prefetch_factor=2 if workers > 0 else None,
    )
    batches: Iterator[tuple[Tensor, list[str]]] = iter(loader)

    # ---- eval helpers --------------------------------------------------------------------
    if cfg["eval_lmbdas"]:
        eval_lmbdas: list[float | None] = [float(v) for v in cfg["eval_lmbdas"]]
    elif variable:
        eval_lmbdas = [lo, math.sqrt(lo * hi), hi] if hi > lo else [lo]
    else:
        eval_lmbdas = [None]

    def text_fn(caption: str) -> Tensor:
        assert text_bank is not None
        return text_bank[cap_index[caption]].unsqueeze(0)

    def run_eval() -> None:
        if not (d.main and eval_images):
            return
        t0 = time.perf_counter()
        em = create_model(mcfg)
        em.load_state_dict(_cpu_state_dict(model))
        em.to(device)
        rows = evaluate_bitstreams(em, eval_images, eval_lmbdas, text_fn if uses_text else None,
                                   device, lpips_mod)
        del em
        for r in rows:
            log.csv("eval.csv", {"step": step, **r}, EVAL_FIELDS)
        parts = []
        for lam in eval_lmbdas:
            sel = [r for r in rows if r["lmbda"] == lam]
            mb = sum(r["bpp"] for r in sel) / len(sel)
            mp = sum(r["psnr"] for r in sel) / len(sel)
            row = {"step": step, "lmbda": lam, "image": "MEAN", "bpp": mb, "psnr": mp}
            if sel and "lpips" in sel[0]:
                row["lpips"] = sum(r["lpips"] for r in sel) / len(sel)
            log.csv("eval.csv", row, EVAL_FIELDS)
            lam_s = "default" if lam is None else f"{lam:.4g}"
            parts.append(f"λ={lam_s}: {mb:.3f} bpp {mp:.2f} dB"
                         + (f" LPIPS {row['lpips']:.3f}" if "lpips" in row else ""))
        log(f"eval @ step {step} ({len(eval_images)} images, {time.perf_counter() - t0:.1f} s): "
            + "; ".join(parts))

    def save(final: bool = False) -> None:
        if not d.main:
            return
        payload = {
            "format": STATE_FORMAT,
            "step": step,
            "train_seconds": train_seconds,
            "model": _cpu_state_dict(model),
            "optimizer": optimizer.state_dict(),
            "aux_optimizer": aux_optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "rng": rng_state(),
            "model_config": json.loads(json.dumps(mcfg)),
            "config": json.loads(json.dumps({k: v for k, v in cfg.items()}, default=str)),
        }
        atomic_torch_save(payload, out / "state.pt")
        if final:
            weights = out / f"{mcfg['name']}.safetensors"
            em = create_model(mcfg)
            em.load_state_dict(payload["model"])
            save_weights(em, weights)
            (out / "model_config.json").write_text(json.dumps(mcfg, indent=2) + "\n", encoding="utf-8")
            log(f"saved step {step}: state.pt and {weights.name}")
        else:
            log(f"checkpoint: step {step} -> state.pt")

    if d.main:
        (out / "train_config.json").write_text(
            json.dumps({k: v for k, v in cfg.items()}, indent=2, default=str) + "\n", encoding="utf-8")
    log(f"setup took {time.perf_counter() - t_start:.1f} s; training from step {step} "
        f"(max_steps {max_steps}, max_minutes {max_minutes}, λ in [{lo:.4g}, {hi:.4g}], "
        f"k_P {k_p}, k_J {k_j}, lr {schedule.lr:.3g})")

    # ---- loop ----------------------------------------------------------------------------
    loop_t0 = time.perf_counter()
    base_seconds = train_seconds
    last_save_t = loop_t0
    last_log_t = loop_t0
    last_log_step = step
    bad_steps = 0
    reason = "?"
    while True:
        train_seconds = base_seconds + (time.perf_counter() - loop_t0)
        local_reason = None
        if max_steps is not None and step >= max_steps:
            local_reason = "max_steps"
        elif max_minutes is not None and train_seconds >= max_minutes * 60:
            local_reason = "max_minutes"
        elif stop.raised:
            local_reason = "signal"
        want_stop = local_reason is not None
        if d.enabled:  # every rank stops at the same step and sees the same clock
            flag = torch.tensor([float(want_stop), train_seconds], dtype=torch.float64,
                                device=device if device.type == "cuda" else "cpu")
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            want_stop, train_seconds = bool(flag[0] > 0), float(flag[1])
        if want_stop:
            reason = local_reason or "stop requested by another rank"
            break
        # every step's randomness (quantisation noise) is a pure function of (seed, rank, step):
        # a resumed run repeats exactly what an uninterrupted one would have done
        torch.manual_seed((seed * 1_000_003 + d.rank * 7919 + step) % 2**63)
        if schedule.update(step, train_seconds / 60):
            log(f"lr -> {schedule.lr:.3g} at step {step}")

        lam = sample_lmbda(lo, hi, seed, step, bs if cfg["per_sample_lmbda"] else None,
                           str(cfg["lmbda_sampling"]), float(cfg["lmbda_power"])) if variable else lo
        x, caps = next(batches)
        x = x.to(device, non_blocking=True)
        if use_cl:
            x = x.contiguous(memory_format=torch.channels_last)
        idx = torch.tensor([cap_index[c] for c in caps])
        text = text_bank[idx].to(device, non_blocking=True) if text_bank is not None else None
        temb = clip_text[idx].to(device) if clip_text is not None else None
        lam_arg: float | Tensor = lam.to(device) if isinstance(lam, Tensor) else lam

        k_p_scale = lpips_weight_scale(lam_arg, step, int(cfg["k_P_ramp_steps"] or 0),
                                       cfg["k_P_lmbda_ref"]) if k_p > 0 else 1.0
        losses, aux, gnorm, ok = train_step(
            fwd, criterion, optimizer, aux_optimizer, main_params, aux_params,
            x, text, lam_arg, variable, temb, float(cfg["clip_grad"]), k_p_scale)
        if not ok:
            bad_steps += 1
            log(f"warning: non-finite gradient at step {step} (loss {float(losses['loss'].detach()):.4g}); "
                f"step skipped ({bad_steps} in a row)")
            if bad_steps >= int(cfg["max_bad_steps"]):
                raise RuntimeError(f"{bad_steps} non-finite steps in a row: diverged")
            step += 1
            continue
        bad_steps = 0
        step += 1

        now = time.perf_counter()
        if d.main and (step % int(cfg["log_every"]) == 0 or step == 1 or
                       (max_steps is not None and step >= max_steps)):
            sps = (now - last_log_t) / max(1, step - last_log_step)
            last_log_t, last_log_step = now, step
            vals = {k: float(v.detach()) for k, v in losses.items()}
            row = {
                "step": step, "lmbda": float(lam.mean()) if isinstance(lam, Tensor) else lam,
                "loss": vals["loss"], "bpp": vals["bpp"], "mse": vals["mse"],
                "psnr": psnr_from_mse(vals["mse"]), "lpips": vals.get("lpips"),
                "joint": vals.get("joint"),
                "aux": float(aux.detach()), "grad_norm": float(gnorm), "lr": schedule.lr,
                "s_per_step": sps, "wall_s": base_seconds + now - loop_t0,
            }
            log.csv("log.csv", row, LOG_FIELDS)
            log(f"step {step}: λ {row['lmbda']:.4g} loss {row['loss']:.4f} bpp {row['bpp']:.4f} "
                f"psnr {row['psnr']:.2f}"
                + (f" lpips {row['lpips']:.4f}" if row["lpips"] is not None else "")
                + (f" joint {row['joint']:.4f}" if row["joint"] is not None else "")
                + f" aux {row['aux']:.1f} |g| {row['grad_norm']:.3g} {sps:.3f} s/step")
        train_seconds = base_seconds + (now - loop_t0)
        if d.main and (
            (cfg["save_every_steps"] and step % int(cfg["save_every_steps"]) == 0)
            or (cfg["save_every_minutes"] and now - last_save_t >= 60 * float(cfg["save_every_minutes"]))
        ):
            save()
            last_save_t = time.perf_counter()
        if cfg["eval_every_steps"] and step % int(cfg["eval_every_steps"]) == 0:
            if amp is not None:
                amp.enabled = False
            run_eval()
            if amp is not None:
                amp.enabled = True

    # ---- end -----------------------------------------------------------------------------
    log(f"stopping at step {step} ({reason}); {train_seconds / 60:.1f} min of training in total")
    save(final=True)
    if cfg["eval_at_end"] and not (cfg["eval_every_steps"] and step % int(cfg["eval_every_steps"]) == 0):
        if amp is not None:
            amp.enabled = False
        run_eval()
    summary = {"step": step, "reason": reason, "train_seconds": train_seconds, "out": str(out)}
    if d.enabled:
        sums: list[Any] = [None] * d.world
        torch.distributed.all_gather_object(sums, _param_checksum(model))
        if d.main:
            check = {"world": d.world, "checksums": sums, "agree": len(set(sums)) == 1, "step": step}
            (out / "ddp_check.json").write_text(json.dumps(check, indent=2) + "\n", encoding="utf-8")
            log(f"ddp: weights agree across ranks: {check['agree']}")
            summary["ddp_agree"] = check["agree"]
    return summary


# --------------------------------------------------------------------------------------------
# Step-time profile
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m app train",
        description="Train an embedded ELIC / TACO (resumable; DDP under torchrun).",
    )
    p.add_argument("--config", required=True,
                   help="training config JSON, or a shipped name (elic-small, taco-small, tiny-smoke)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/state.pt if present")
    p.add_argument("--max-steps", type=int, default=None, help="total steps (overrides the config)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="cumulative training-time budget in minutes (overrides the config)")
    p.add_argument("--out", default=None, help="output folder (default: config 'out' or runs/NAME)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per process")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N")
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                   help="override a config key, value as JSON (repeatable), e.g. --set k_P=2.0")
    p.add_argument("--profile", action="store_true",
                   help="do not train: time steps on random data (fp32 vs bf16+channels_last, "
                   "threads from --profile-threads) and print a JSON table")
    p.add_argument("--profile-threads", default="2,1", help="thread counts to profile (default 2,1)")
    p.add_argument("--profile-steps", type=int, default=3, help="timed steps per round and setting")
    p.add_argument("--profile-rounds", type=int, default=3, help="interleaved rounds")
    return p


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=JSON, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m app train``; returns the exit status."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    overrides = parse_overrides(args.set)
    if args.max_steps is not None:
        overrides["max_steps"] = args.max_steps
    if args.max_minutes is not None:
        overrides["max_minutes"] = args.max_minutes
    if args.threads is not None:
        overrides["threads"] = args.threads
    if args.device is not None:
        overrides["device"] = args.device
    cfg = load_train_config(args.config, overrides)
    if args.profile:
        threads = [int(t) for t in str(args.profile_threads).split(",") if t.strip()]
        rows = profile_steps(cfg, threads, args.profile_steps, args.profile_rounds)
        for r in rows:
            print(f"{r['model']:<12} {r['mode']:<20} threads {r['threads']}: "
                  f"{r['median_s']:.3f} s/step median ({r['min_s']:.3f} min, n={r['n']})")
        print(json.dumps(rows))
        return 0
    if args.out:
        out = Path(args.out).expanduser()  # relative to the working directory
    else:  # the config's "out" is relative to the repository root
        out = Path(str(cfg["out"] or f"runs/{cfg['name']}")).expanduser()
        out = out if out.is_absolute() else REPO_ROOT / out
    summary = train(cfg, out, resume=args.resume)
    return 0 if summary.get("ddp_agree", True) else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
