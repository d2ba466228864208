"""Initialising a model from other weights (``init_from``): ELIC→TACO key remap, gain regridding."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from app.errors import ConfigError, MissingModelError
from app.train.checkpoint import STATE_FORMAT

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
