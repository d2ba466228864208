"""Mixed precision on the transforms only: bf16 autocast with float32 outputs."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn


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
            mod.forward = functools.partial(self._run, orig)
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
