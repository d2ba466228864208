"""The resumable training state ``OUT/state.pt``: RNG states, atomic writes, the format check.

A state file holds tensors and plain containers only, so it loads with ``weights_only=True``.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from app.errors import ConfigError

STATE_FORMAT = "taco-train-state/1"


def rng_state() -> dict[str, Any]:
    """python / numpy / torch (and CUDA) RNG states as weights_only-loadable objects."""
    np_state: Any = np.random.get_state()  # the legacy tuple (kind, key, pos, has_gauss, gauss)
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


def cpu_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """A detached, contiguous CPU copy of ``model``'s state dict (safe to save or load elsewhere)."""
    return {k: v.detach().to("cpu", memory_format=torch.contiguous_format).clone()
            for k, v in model.state_dict().items()}


def training_state(
    *, step: int, train_seconds: float, model: nn.Module, optimizer: torch.optim.Optimizer,
    aux_optimizer: torch.optim.Optimizer, schedule: Any, model_config: Mapping[str, Any],
    config: Mapping[str, Any],
) -> dict[str, Any]:
    """The ``state.pt`` payload: everything a resumed run needs to continue where this one is.

    ``model_config`` and ``config`` are stored as JSON round-trips (plain containers; values JSON
    cannot hold are stored as strings).
    """
    return {
        "format": STATE_FORMAT,
        "step": step,
        "train_seconds": train_seconds,
        "model": cpu_state_dict(model),
        "optimizer": optimizer.state_dict(),
        "aux_optimizer": aux_optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "rng": rng_state(),
        "model_config": json.loads(json.dumps(dict(model_config))),
        "config": json.loads(json.dumps(dict(config), default=str)),
    }
