"""Model configurations as JSON data (``app/configs/*.json``): loading and validation.

A config is a plain dict; see docs/ARCHITECTURE.md "Model contract" for the keys. Validation fills
the optional keys with their defaults and raises :class:`app.errors.ConfigError` (one line) for
anything inconsistent, so a model is never built from a half-valid config.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from app.errors import ConfigError

__all__ = ["CONFIG_DIR", "list_configs", "load_config", "validate_config"]

#: Folder holding the shipped configs (``<name>.json``).
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"

_REQUIRED = ("name", "arch", "N", "M", "slices")
_DEFAULTS: dict[str, Any] = {
    "ctx_hidden": [224, 128],
    "hyper_out": None,  # 2·M
    "text_dim": 512,
    "text_encoder": "clip",
    "text_len": 38,
    "heads": 8,
    "attn_mask": False,
    # "layernorm": the official Injector (LN(x) + gamma*attn); "identity": x + gamma*attn, an exact
    # identity at gamma = 0 (for bolting the adapter onto a trained ELIC)
    "injector_residual": "layernorm",
    "variable_rate": False,
    "lmbda_ladder": [],
    "lmbda_range": None,  # [min, max] of the ladder
}


def list_configs() -> list[str]:
    """Names of the shipped configs, sorted (``taco-official``, ``elic-small``, ...)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load_config(name_or_path: str | Path) -> dict[str, Any]:
    """Load and validate a config by shipped name (``"taco-small"``) or by path to a JSON file."""
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith(".json") or path.is_file()):
        path = CONFIG_DIR / f"{text}.json"
        if not path.is_file():
            raise ConfigError(
                f"unknown model config {text!r}; available: {', '.join(list_configs())}"
            )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"model config file not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read model config {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"model config {path} is not a JSON object")
    return validate_config(data)


def _positive_int(cfg: dict[str, Any], key: str) -> int:
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(
            f"config {cfg.get('name')!r}: {key} must be a positive integer, got {value!r}"
        )
    return value


def validate_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Return a validated copy of ``cfg`` with defaults filled in; raise ConfigError otherwise."""
    if not isinstance(cfg, dict):
        raise ConfigError(f"model config must be a dict, got {type(cfg).__name__}")
    missing = [k for k in _REQUIRED if k not in cfg]
    if missing:
        raise ConfigError(f"model config {cfg.get('name')!r} lacks {', '.join(missing)}")
    out: dict[str, Any] = {**_DEFAULTS, **cfg}
    name = out["name"]
    if out["arch"] not in ("elic", "taco"):
        raise ConfigError(f"config {name!r}: arch must be 'elic' or 'taco', got {out['arch']!r}")
    n, m = _positive_int(out, "N"), _positive_int(out, "M")
    if n % 2:
        raise ConfigError(f"config {name!r}: N must be even, got {n}")
    slices = out["slices"]
    if (
        not isinstance(slices, list)
        or not slices
        or any(isinstance(c, bool) or not isinstance(c, int) or c <= 0 for c in slices)
    ):
        raise ConfigError(f"config {name!r}: slices must be a list of positive integers")
    if sum(slices) != m:
        raise ConfigError(f"config {name!r}: slices sum to {sum(slices)}, not M = {m}")
    hidden = out["ctx_hidden"]
    if not (
        isinstance(hidden, list)
        and len(hidden) == 2
        and all(isinstance(h, int) and h > 0 for h in hidden)
    ):
        raise ConfigError(f"config {name!r}: ctx_hidden must be two positive integers")
    if out["hyper_out"] is None:
        out["hyper_out"] = 2 * m
    _positive_int(out, "hyper_out")
    for key in ("text_dim", "text_len", "heads"):
        _positive_int(out, key)
    if out["arch"] == "taco":
        if n % out["heads"] or out["text_dim"] % out["heads"]:
            raise ConfigError(
                f"config {name!r}: heads ({out['heads']}) must divide N ({n}) and text_dim ({out['text_dim']})"
            )
    if out["text_encoder"] not in ("clip", "minilm"):
        raise ConfigError(f"config {name!r}: text_encoder must be 'clip' or 'minilm'")
    if out["injector_residual"] not in ("layernorm", "identity"):
        raise ConfigError(
            f"config {name!r}: injector_residual must be 'layernorm' or 'identity', "
            f"got {out['injector_residual']!r}"
        )
    for key in ("attn_mask", "variable_rate"):
        if not isinstance(out[key], bool):
            raise ConfigError(f"config {name!r}: {key} must be true or false")

    ladder = out["lmbda_ladder"]
    if not isinstance(ladder, list) or any(
        isinstance(v, bool) or not isinstance(v, int | float) or not v > 0 for v in ladder
    ):
        raise ConfigError(f"config {name!r}: lmbda_ladder must be a list of positive numbers")
    ladder = [float(v) for v in ladder]
    if any(b <= a for a, b in zip(ladder, ladder[1:], strict=False)):
        raise ConfigError(f"config {name!r}: lmbda_ladder must be strictly increasing")
    out["lmbda_ladder"] = ladder
    rng = out["lmbda_range"]
    if rng is None:
        rng = [ladder[0], ladder[-1]] if ladder else None
    if rng is not None:
        if not (
            isinstance(rng, list) and len(rng) == 2 and all(isinstance(v, int | float) for v in rng)
        ):
            raise ConfigError(f"config {name!r}: lmbda_range must be [lo, hi]")
        lo, hi = float(rng[0]), float(rng[1])
        if not 0 < lo <= hi:
            raise ConfigError(f"config {name!r}: lmbda_range must satisfy 0 < lo <= hi")
        rng = [lo, hi]
    out["lmbda_range"] = rng
    if out["variable_rate"]:
        if not ladder or rng is None:
            raise ConfigError(f"config {name!r}: variable_rate needs a non-empty lmbda_ladder")
        tol = 1e-9
        if not (
            math.isclose(ladder[0], rng[0], rel_tol=tol)
            and math.isclose(ladder[-1], rng[1], rel_tol=tol)
        ):
            raise ConfigError(
                f"config {name!r}: lmbda_ladder must start at lmbda_range[0] and end at lmbda_range[1]"
            )
    return out
