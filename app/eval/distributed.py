"""Sharding ``python -m app eval`` over the processes a launcher started (torchrun).

torchrun (``torch.distributed.run``) sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
rendezvous variables for every worker; this module only reads them. Without them (or with
``WORLD_SIZE=1``) everything here is a no-op and the evaluation is one process, as before.

Work units are split by position: rank ``r`` of ``w`` takes units ``r, r + w, r + 2w, …`` of
the deterministic unit list, so every rank knows its share without any communication, and the
same list split again after a restart gives the same shares.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

from app.errors import ConfigError
from app.settings import get_settings

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the launch (rank 0 of 1 when not launched by torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def env_info(environ: dict[str, str] | None = None) -> DistInfo:
    """Rank, world size and local rank from the launcher's environment (no process group)."""
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE", "1") or 1)
        rank = int(env.get("RANK", "0") or 0)
        local = int(env.get("LOCAL_RANK", "0") or 0)
    except ValueError as exc:
        raise ConfigError(f"bad RANK / WORLD_SIZE / LOCAL_RANK in the environment: {exc}") from exc
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"RANK {rank} is not within WORLD_SIZE {world}")
    return DistInfo(rank, world, local)


def init(device: str = "cpu") -> DistInfo:
    """Join the launcher's process group: gloo for ``device="cpu"``, NCCL for ``"cuda"``.

    With ``"cuda"`` each rank is pinned to GPU ``LOCAL_RANK`` first. Returns a world-1
    `DistInfo` (and starts nothing) when the process was not launched as part of a group.
    """
    info = env_info()
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be cpu or cuda, not {device!r}")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("--device cuda: CUDA is not available in this process")
        torch.cuda.set_device(info.local_rank % max(1, torch.cuda.device_count()))
    if not info.enabled:
        return info
    import torch.distributed as dist

    if not dist.is_initialized():
        # how long a rank waits at a barrier for the others (``TACO_EVAL_DIST_TIMEOUT_S``)
        timeout = get_settings().eval_dist_timeout_s
        dist.init_process_group(backend="nccl" if device == "cuda" else "gloo",
                                timeout=timedelta(seconds=timeout))
    return DistInfo(dist.get_rank(), dist.get_world_size(), info.local_rank)


def barrier(info: DistInfo) -> None:
    """Wait until every rank got here (nothing to wait for in a one-process run)."""
    if info.enabled:
        import torch.distributed as dist

        dist.barrier()


def finish(info: DistInfo) -> None:
    """Leave the process group (when this module's `init` made one)."""
    if info.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def shard(units: Sequence[T], rank: int, world: int) -> list[T]:
    """Rank ``rank``'s share of ``units``: every ``world``-th unit, starting at ``rank``."""
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"rank {rank} is not within world size {world}")
    return list(units[rank::world])
