"""The process group of a ``torchrun`` launch, the training device and the end-of-run weight check."""

from __future__ import annotations

import hashlib
import inspect
from typing import Any

import torch
from torch import nn

from app.errors import ConfigError
from app.eval.distributed import DistInfo, env_info

#: Process-group facts for this process (world 1 without torchrun): the same record as eval's.
Dist = DistInfo


def init_distributed(device_kind: str) -> Dist:
    """Initialise torch.distributed when launched by torchrun (``WORLD_SIZE`` > 1)."""
    launch = env_info()
    if launch.world <= 1:
        return Dist()
    import torch.distributed as dist

    backend = "nccl" if device_kind == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return Dist(dist.get_rank(), dist.get_world_size(), launch.local_rank)


def device_kind(spec: str) -> str:
    """``"cuda"`` or ``"cpu"``: the kind of device ``spec`` (a config's ``device``) will give."""
    if (spec == "auto" and torch.cuda.is_available()) or spec.startswith("cuda"):
        return "cuda"
    return "cpu"


def pick_device(spec: str, d: Dist) -> torch.device:
    """The device for ``spec`` ("auto", "cpu", "cuda", "cuda:N"); "cuda" means this rank's GPU."""
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


def param_checksum(model: nn.Module) -> str:
    """A digest of the floating-point state of ``model`` (equal on ranks that hold equal weights)."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        if v.is_floating_point():
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()[:16]


def wrap_ddp(module: nn.Module, device: torch.device, find_unused: bool) -> nn.Module:
    """``module`` under DistributedDataParallel, with rank-local buffers.

    The buffers (entropy-coder tables) are never synchronised during training.
    """
    from torch.nn.parallel import DistributedDataParallel as DDP

    sync_kw: dict[str, Any] = ({"forward_sync_buffers": False}
               if "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters
               else {"broadcast_buffers": False})
    return DDP(module, device_ids=[device.index] if device.type == "cuda" else None,
               find_unused_parameters=find_unused, **sync_kw)


def agree_stop(want_stop: bool, train_seconds: float, device: torch.device) -> tuple[bool, float]:
    """Whether any rank wants to stop, and the largest clock: every rank stops at the same step and
    sees the same training time."""
    flag = torch.tensor([float(want_stop), train_seconds], dtype=torch.float64,
                        device=device if device.type == "cuda" else "cpu")
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return bool(flag[0] > 0), float(flag[1])


def gather_checksums(model: nn.Module, d: Dist) -> list[str]:
    """Every rank's :func:`param_checksum` of ``model``, in rank order (on every rank)."""
    sums: list[Any] = [None] * d.world
    torch.distributed.all_gather_object(sums, param_checksum(model))
    return sums
