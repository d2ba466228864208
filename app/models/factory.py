"""Build models from configs, load official checkpoints, save/load our own weights.

- :func:`create_model` builds ELIC or TACO from a config dict (random initialisation; the
  ``weights_source`` attribute stays ``None`` until a loader fills the weights, so callers can
  refuse to run an untrained embedded model).
- :func:`load_official_checkpoint` reads the released TACO ``lambda_*.pth.tar`` format (as the
  official training code saves it, under DDP): a dict with ``state_dict`` (``module.`` prefix,
  compressai ≤1.2.6 entropy-bottleneck names, empty (0,) coder tables) or a bare state_dict;
  strict key check.
- :func:`save_weights` / :func:`load_weights` use safetensors (optionally fp16 storage; loading
  always casts back to fp32) with the config in the file metadata.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from torch import Tensor

from app.errors import ConfigError, MissingModelError
from app.models.config import list_configs, load_config, validate_config
from app.models.elic import ELIC
from app.models.taco import TACO

__all__ = [
    "WEIGHTS_FORMAT",
    "canonical_state_dict",
    "create_model",
    "list_configs",
    "load_config",
    "load_official_checkpoint",
    "load_weights",
    "read_weights_metadata",
    "save_weights",
]

#: ``format`` metadata value written by :func:`save_weights`.
WEIGHTS_FORMAT = "taco-demo-weights/1"

_OLD_EB_KEY = re.compile(r"^(.*entropy_bottleneck)\._(matrix|bias|factor)(\d+)$")
_OLD_EB_NAMES = {"matrix": "matrices", "bias": "biases", "factor": "factors"}
_TABLES = {
    EntropyBottleneck: ("_quantized_cdf", "_offset", "_cdf_length"),
    GaussianConditional: ("_quantized_cdf", "_offset", "_cdf_length", "scale_table"),
}
_TABLE_SUFFIXES = ("._quantized_cdf", "._offset", "._cdf_length", ".scale_table")


def create_model(cfg: dict[str, Any] | str) -> ELIC | TACO:
    """Build ELIC or TACO (random initialisation) from a config dict or a shipped config name."""
    cfg = load_config(cfg) if isinstance(cfg, str) else validate_config(cfg)
    return TACO(cfg) if cfg["arch"] == "taco" else ELIC(cfg)


def canonical_state_dict(state_dict: dict[str, Any]) -> dict[str, Tensor]:
    """Strip ``module.`` prefixes and map old entropy-bottleneck names to compressai ≥1.2.7 ones."""
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise ConfigError(f"not a state_dict: entry {key!r} is a {type(value).__name__}")
        name = key[len("module.") :] if key.startswith("module.") else key
        match = _OLD_EB_KEY.match(name)
        if match:
            name = f"{match.group(1)}.{_OLD_EB_NAMES[match.group(2)]}.{match.group(3)}"
        if name in out:
            raise ConfigError(f"state_dict has the key {name!r} twice (with and without a prefix)")
        out[name] = value
    return out


def _is_table(key: str) -> bool:
    return key.endswith(_TABLE_SUFFIXES)


def _check_keys(model: ELIC, state: dict[str, Tensor], what: str) -> None:
    """Raise ConfigError (one line) unless ``state`` has exactly the model's keys and shapes."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise ConfigError(f"{what} does not match config {model.cfg['name']!r}: {'; '.join(parts)}")
    for key, ref in expected.items():
        if _is_table(key):
            continue
        if tuple(state[key].shape) != tuple(ref.shape):
            raise ConfigError(
                f"{what} does not match config {model.cfg['name']!r}: {key} has shape "
                f"{tuple(state[key].shape)}, expected {tuple(ref.shape)}"
            )


def _load_state(model: ELIC, state: dict[str, Tensor]) -> None:
    """Resize the entropy-coder tables to the incoming shapes, load strictly, then ``update``."""
    for name, module in model.named_modules():
        for cls, buffers in _TABLES.items():
            if isinstance(module, cls):
                for buf in buffers:
                    getattr(module, buf).resize_(state[f"{name}.{buf}"].shape)
    model.load_state_dict(state, strict=True)
    model.update(force=True)
    model.eval()


def load_official_checkpoint(
    path: str | Path, cfg_name: str | dict[str, Any] = "taco-official"
) -> ELIC | TACO:
    """Load a released TACO checkpoint (or a bare state_dict file) into a fresh model, strictly.

    Accepts the training-script format (dict with ``state_dict`` plus optimiser entries), DDP
    ``module.`` prefixes, compressai ≤1.2.6 entropy-bottleneck names and empty (0,) coder tables.
    Reads with ``torch.load(weights_only=True)`` on CPU. Raises MissingModelError when the file is
    absent and ConfigError when it cannot be read or its keys/shapes do not match the config.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingModelError(f"official checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling problem is a bad file for the user
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot read checkpoint {path.name}: {first}") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise ConfigError(f"{path.name} holds no state_dict")
    state = canonical_state_dict(obj)
    model = create_model(cfg_name)
    _check_keys(model, state, f"checkpoint {path.name}")
    _load_state(
        model, {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in state.items()}
    )
    model.weights_source = str(path)
    return model


def _keep_fp32(key: str) -> bool:
    """Entropy models and gains stay fp32 even in fp16 files (tiny, and rate-critical)."""
    return key.startswith(("entropy_bottleneck.", "gaussian_conditional.")) or key in (
        "gain",
        "inv_gain",
    )


def save_weights(
    model: ELIC, path: str | Path, half: bool = False, extra: dict[str, str] | None = None
) -> None:
    """Write the model's state_dict (config in the metadata) to a safetensors file.

    ``half=True`` stores the transform weights as fp16 (about half the size); the entropy models
    and gains stay fp32. The entropy-coder tables are stored empty, as in the official
    checkpoints: :func:`load_weights` rebuilds them with ``update(force=True)`` (saves ~0.8 MB).
    ``extra`` adds string metadata (e.g. training notes).
    """
    from safetensors.torch import save_file

    tensors: dict[str, Tensor] = {}
    for key, value in model.state_dict().items():
        value = value.detach().cpu().contiguous()
        if _is_table(key):
            value = value.new_empty(0)
        elif half and value.is_floating_point() and not _keep_fp32(key):
            value = value.to(torch.float16)
        tensors[key] = value
    metadata = {
        **(extra or {}),
        "format": WEIGHTS_FORMAT,
        "config": json.dumps(model.cfg, sort_keys=True),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    _canonicalise_header(path)


def _canonicalise_header(path: Path) -> None:
    """Rewrite a safetensors header with sorted keys, so equal weights give equal bytes.

    safetensors writes the metadata map in hash order, which changes from process to process:
    the same weights saved twice got different sha256s, and so different bitstream fingerprints.
    The header is JSON padded with spaces to a fixed length; the sorted form has the same length,
    and readers locate tensors by their offsets, not by the order of the entries.
    """
    with open(path, "r+b") as fh:
        n = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(n))
        text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) <= n:
            fh.seek(8)
            fh.write(text + b" " * (n - len(text)))


def read_weights_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a weights file (``config`` holds the model config as JSON)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise MissingModelError(f"model weights not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"cannot read weights {path.name}: {exc}") from None


def load_weights(model: ELIC, path: str | Path) -> ELIC:
    """Load a :func:`save_weights` file into ``model`` strictly (fp16 cast back to fp32), then ``update``.

    Raises MissingModelError if the file is absent and ConfigError if it is unreadable, was saved
    for another architecture, or its keys/shapes differ from the model's.
    """
    from safetensors import safe_open

    path = Path(path)
    metadata = read_weights_metadata(path)
    saved_cfg = metadata.get("config")
    if saved_cfg:
        try:
            saved = json.loads(saved_cfg)
        except ValueError:
            raise ConfigError(f"{path.name}: corrupt config metadata") from None
        keys = ("arch", "N", "M", "slices", "text_dim", "variable_rate")
        if any(saved.get(k) != model.cfg.get(k) for k in keys):
            raise ConfigError(
                f"{path.name} was saved for config {saved.get('name')!r}, not {model.cfg['name']!r}"
            )
        # same tensors, different computation: an Injector layout mismatch must not load silently
        # (files written before the option existed used the official "layernorm" layout)
        residual = saved.get("injector_residual", "layernorm")
        if residual != model.cfg.get("injector_residual", "layernorm"):
            raise ConfigError(
                f"{path.name} was trained with injector_residual {residual!r}, the model config "
                f"{model.cfg['name']!r} has {model.cfg.get('injector_residual', 'layernorm')!r}"
            )
    try:
        with safe_open(str(path), framework="pt") as handle:
            state = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"cannot read weights {path.name}: {exc}") from None
    _check_keys(model, state, f"weights {path.name}")
    dtype = next(model.parameters()).dtype
    _load_state(model, {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()})
    model.weights_source = str(path)
    return model
