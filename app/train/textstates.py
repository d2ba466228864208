"""Text-encoder states of every caption, computed once per run and cached in the output folder."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from app.train.checkpoint import atomic_torch_save


def _captions_digest(captions: Sequence[str], tag: str) -> str:
    h = hashlib.sha256(tag.encode())
    for c in captions:
        h.update(c.encode("utf-8", "surrogatepass") + b"\x00")
    return h.hexdigest()[:16]


def precompute_text_states(
    encode: Callable[[list[str]], Tensor], captions: Sequence[str], cache: Path | None,
    tag: str, log: Callable[[str], None], chunk: int = 64, write: bool = True,
) -> Tensor:
    """(N, L, D) states of every caption, computed once (and cached in ``cache`` if given).

    The cache is reused only when it holds exactly these captions (digest); ``write=False``
    (DDP ranks > 0) only reads it.
    """
    digest = _captions_digest(captions, tag)
    if cache is not None and cache.is_file():
        data = torch.load(cache, map_location="cpu", weights_only=True)
        if data.get("digest") == digest:
            log(f"text: {len(captions)} {tag} caption states loaded from {cache.name}")
            return data["states"]
    t0 = time.perf_counter()
    parts = [encode(list(captions[i : i + chunk])).float().cpu() for i in range(0, len(captions), chunk)]
    states = torch.cat(parts) if parts else torch.empty(0)
    log(f"text: encoded {len(captions)} captions with {tag} in {time.perf_counter() - t0:.1f} s "
        f"-> {tuple(states.shape)} ({states.numel() * 4 / 2**20:.0f} MiB)")
    if cache is not None and write:
        atomic_torch_save({"digest": digest, "states": states}, cache)
    return states
