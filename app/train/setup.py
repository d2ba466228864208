"""The pieces a training run builds before its first step, each from explicit inputs.

:class:`app.train.engine.Trainer` calls these in a fixed order: model initialisation is seeded
here, and the python / numpy generators are seeded (or restored) after everything that could
draw from them, so the order is part of the run's reproducibility.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from app.errors import ConfigError
from app.train.checkpoint import load_state, set_rng_state
from app.train.config import data_root_of, repo_path
from app.train.data import (
    CaptionedImageDataset,
    InfiniteShardedSampler,
    collate,
    load_eval_images,
    records_from_sources,
)
from app.train.distributed import Dist
from app.train.precision import TransformAutocast
from app.train.runlog import truncate_csv
from app.train.schedule import MilestoneSchedule
from app.train.textstates import precompute_text_states
from app.train.warmstart import init_from_weights, read_weights, source_ladder

if TYPE_CHECKING:
    from app.models.elic import ELIC

Log = Callable[[str], None]
EvalImage = tuple[str, np.ndarray, str]


def build_data(cfg: Mapping[str, Any], log: Log) -> tuple[CaptionedImageDataset, list[EvalImage]]:
    """The training dataset (eval images excluded) and the loaded eval images."""
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
    return dataset, eval_images


def build_model(mcfg: Mapping[str, Any], seed: int, create_model: Callable[..., ELIC],
                log: Log) -> tuple[ELIC, list[Tensor], list[Tensor]]:
    """The seeded model, its main parameters and its auxiliary ``*.quantiles`` parameters."""
    torch.manual_seed(seed)  # identical initial weights on every rank (DDP broadcasts anyway)
    model = create_model(mcfg)
    n_params = sum(p.numel() for p in model.parameters())
    named = dict(model.named_parameters())
    aux_names = [n for n in named if n.endswith("quantiles")]
    main_names = [n for n in named if not n.endswith("quantiles") and named[n].requires_grad]
    if not aux_names:
        raise ConfigError("the model has no *.quantiles parameters (EntropyBottleneck expected)")
    log(f"model: {n_params / 1e6:.2f} M parameters ({len(main_names)} main / "
        f"{len(aux_names)} aux tensors)")
    return model, [named[n] for n in main_names], [named[n] for n in aux_names]


def restore_or_init(model: nn.Module, cfg: Mapping[str, Any], mcfg: Mapping[str, Any], out: Path,
                    resume: bool, d: Dist, log: Log) -> dict[str, Any] | None:
    """Load ``out/state.pt`` into ``model`` when resuming (returned), else apply ``init_from``.

    A resumed run drops the log rows written after its checkpoint (they will be redone).
    """
    state: dict[str, Any] | None = None
    state_path = out / "state.pt"
    if resume and state_path.is_file():
        state = load_state(state_path)
        trained = state.get("model_config", {}).get("name")
        if trained != mcfg["name"]:
            raise ConfigError(f"{state_path} was trained with model {trained!r}, not {mcfg['name']!r}")
        model.load_state_dict(state["model"])
        log(f"resume: step {state['step']} from {state_path}")
        if d.main:
            for name in ("log.csv", "eval.csv"):
                truncate_csv(out / name, int(state["step"]))
    elif resume:
        log(f"resume: no {state_path.name} in {out}; starting from scratch")
    if state is None and cfg["init_from"]:
        src = repo_path(cfg["init_from"])
        rep = init_from_weights(model, read_weights(src), str(cfg["init_map"]),
                                src_ladder=source_ladder(src) if mcfg.get("variable_rate") else None)
        log(f"init_from {src.name}: {rep['loaded']} tensors copied (g_a remapped ELIC->TACO: "
            f"{rep['remapped']}), {len(rep['mismatched'])} shape mismatches, "
            f"{len(rep['unused'])} unused, {len(rep['not_loaded'])} left at init "
            f"(adapter gates zeroed: {len(rep['gamma_zeroed'])})"
            + (f"; gain tables regridded onto the ladder {mcfg['lmbda_ladder']}"
               if rep["gains_regridded"] else ""))
        if rep["mismatched"]:
            log(f"init_from: shape mismatches {rep['mismatched'][:6]}")
    return state


def prepare_model(model: nn.Module, cfg: Mapping[str, Any], device: torch.device, log: Log
                  ) -> TransformAutocast | None:
    """Move ``model`` to ``device`` (channels_last if configured), training mode, bf16 autocast."""
    model.to(device)
    if cfg["channels_last"]:
        model.to(memory_format=torch.channels_last)
    model.train()
    if not cfg["bf16"]:
        return None
    amp = TransformAutocast(model, cfg["autocast_modules"], device.type, torch.bfloat16)
    log(f"bf16 autocast on {amp.wrapped}" + (f" (not found: {amp.missing})" if amp.missing else ""))
    return amp


def all_captions(dataset: CaptionedImageDataset, eval_images: Sequence[EvalImage]) -> list[str]:
    """The training captions, then each eval caption not among them."""
    captions = dataset.captions()
    for _, _, c in eval_images:
        if c not in captions:
            captions.append(c)
    return captions


def build_text_bank(captions: Sequence[str], cfg: Mapping[str, Any], mcfg: Mapping[str, Any],
                    out: Path, d: Dist, log: Log) -> Tensor:
    """(N, L, D) text-encoder states of ``captions``, written to the cache in ``out`` by rank 0."""
    from app.text import get_text_encoder

    kind = str(cfg["text_encoder"] or mcfg["text_encoder"])  # validated model configs have one
    enc = get_text_encoder(kind)
    cache = out / f"text_states_{kind}.pt"
    if d.enabled and not d.main:
        torch.distributed.barrier()  # let rank 0 write the cache first
    bank = precompute_text_states(enc.encode, captions, cache, kind, log, write=d.main)
    if d.enabled and d.main:
        torch.distributed.barrier()
    if bank.shape[-1] != mcfg.get("text_dim"):
        raise ConfigError(f"text encoder {kind!r} gives dim {bank.shape[-1]}, model "
                          f"expects text_dim {mcfg.get('text_dim')}")
    return bank


def build_optimisers(cfg: Mapping[str, Any], main_params: Sequence[Tensor],
                     aux_params: Sequence[Tensor], max_steps: int | None, max_minutes: float | None,
                     ) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer, MilestoneSchedule]:
    """Adam on the main parameters, Adam on the quantiles, and the main optimiser's schedule."""
    optimizer = torch.optim.Adam(main_params, lr=float(cfg["lr"]))
    aux_optimizer = torch.optim.Adam(aux_params, lr=float(cfg["aux_lr"]))
    schedule = MilestoneSchedule(optimizer, cfg["lr_milestones"] or [], float(cfg["lr_gamma"]),
                                 max_steps, max_minutes,
                                 int(cfg["lr_warmup_steps"] or 0))
    return optimizer, aux_optimizer, schedule


def restore_position(state: Mapping[str, Any] | None, optimizer: torch.optim.Optimizer,
                     aux_optimizer: torch.optim.Optimizer, schedule: MilestoneSchedule, seed: int,
                     d: Dist) -> tuple[int, float]:
    """``(step, train_seconds)`` to start from, with optimisers, schedule and RNG restored from
    ``state`` (RNG on rank 0) or, for a new run, python / numpy seeded per rank."""
    step, train_seconds = 0, 0.0
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
    return step, train_seconds


def build_batches(dataset: CaptionedImageDataset, cfg: Mapping[str, Any], seed: int, d: Dist,
                  device: torch.device, step: int) -> Iterator[tuple[Tensor, list[str]]]:
    """An endless iterator of this rank's batches, positioned at ``step``."""
    bs = int(cfg["batch_size"])
    sampler = InfiniteShardedSampler(len(dataset), seed=seed, rank=d.rank, world=d.world,
                                     start=step * bs)
    workers = int(cfg["workers"])
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=bs, sampler=sampler, num_workers=workers, collate_fn=collate,
        drop_last=True, pin_memory=device.type == "cuda", persistent_workers=workers > 0,
        prefetch_factor=2 if workers > 0 else None,
    )
    return iter(loader)
