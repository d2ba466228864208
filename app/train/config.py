"""Training configs: the keys and their defaults, loading, validation and path resolution.

A config is a JSON object (``app/configs/train/*.json``, or any file); :func:`load_train_config`
fills every key missing from it with its :data:`DEFAULTS` value, applies the command line's
overrides and refuses unknown keys. The result is a plain dict (it is saved as
``train_config.json`` and in ``state.pt``).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from app.errors import ConfigError
from app.settings import REPO_ROOT, get_settings
from app.train.losses import OFFICIAL_BETA, OFFICIAL_LOGIT_SCALE_LOG

TRAIN_CONFIG_DIR = REPO_ROOT / "app" / "configs" / "train"

#: Every training-config key with its default (read-only). Unknown keys are refused (typos fail
#: loudly).
DEFAULTS: Mapping[str, Any] = MappingProxyType({
    "name": None,  # run name (default: config file stem)
    "model": None,  # model config name ("elic-small") or an inline model-config dict
    "model_overrides": {},  # merged into the model config (e.g. {"variable_rate": true})
    "out": None,  # output folder (default runs/<name>); --out wins
    "data_root": None,  # base of relative data paths; default: the settings' data_root
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
})


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
    # a deep copy: a run that edits a list default must not change DEFAULTS for the next one
    cfg = {**copy.deepcopy(dict(DEFAULTS)), **raw, **dict(overrides or {})}
    validate(cfg, path.name)
    if cfg["name"] is None:
        cfg["name"] = path.stem
    cfg["_config_path"] = str(path)
    return cfg


def validate(cfg: Mapping[str, Any], source: str) -> None:
    """Refuse unknown keys, a missing model and values the loop cannot run with."""
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"training config {source}: unknown keys {unknown}")
    if cfg["model"] is None:
        raise ConfigError(f"training config {source}: 'model' is required")
    if int(cfg["workers"]) not in (0, 1, 2):
        raise ConfigError("workers must be 0, 1 or 2")
    if cfg["crop"] % 64:
        raise ConfigError(f"crop must be a multiple of 64, got {cfg['crop']}")


def repo_path(value: str | Path) -> Path:
    """``value`` with ``~`` expanded; a relative path is taken relative to the repository root."""
    p = Path(str(value)).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p


def default_data_root() -> Path:
    """The settings' data root (``TACO_DATA_ROOT``, else ``data`` in the shared folder)."""
    return get_settings().data_root


def data_root_of(cfg: Mapping[str, Any]) -> Path:
    """The config's ``data_root`` (relative to the repository root), or the default."""
    if cfg.get("data_root") is None:
        return default_data_root()
    return repo_path(cfg["data_root"])


def build_model_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The validated model config: the named (or inline) one with ``model_overrides`` applied."""
    from app.models.config import validate_config
    from app.models.factory import load_config

    spec = cfg["model"]
    mcfg = dict(spec) if isinstance(spec, dict) else dict(load_config(spec))
    mcfg.update(cfg.get("model_overrides") or {})
    return validate_config(mcfg)
