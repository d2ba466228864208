"""Training for the embedded ELIC / TACO codecs (``python -m app train --config CONFIG``).

* :mod:`app.train.cli` — the command line: ``main(argv)``, ``--set`` overrides, ``--profile``;
* :mod:`app.train.config` — config keys and defaults, loading, validation, data and model paths;
* :mod:`app.train.engine` — :func:`~app.train.engine.train` and the resumable ``Trainer`` loop;
* :mod:`app.train.step` — one optimisation step (forward + aux loss, backward, clip, both Adams);
* :mod:`app.train.schedule` — λ sampling and bounds, the LPIPS weight ramp, the lr milestones;
* :mod:`app.train.precision` — bf16 autocast on the transforms only;
* :mod:`app.train.distributed` — torchrun process group, device choice, DDP wrapping, checksums;
* :mod:`app.train.checkpoint` — ``state.pt``: RNG states, atomic saves, the format check;
* :mod:`app.train.warmstart` — ``init_from``: ELIC→TACO key remap, gain-table regridding;
* :mod:`app.train.objective` — the configured loss (LPIPS / CLIP loaded or skipped with a notice);
* :mod:`app.train.textstates` — cached text-encoder states of every caption;
* :mod:`app.train.evaluation` — held-out images through real bitstreams;
* :mod:`app.train.runlog` — ``train.log``, ``log.csv`` and ``eval.csv``;
* :mod:`app.train.stopflag` — SIGINT / SIGTERM handling;
* :mod:`app.train.autotune` — ``bf16`` / ``threads`` "auto" resolved by timing steps;
* :mod:`app.train.data` — captioned image sources, RAM-cached random crops, eval-folder guard;
* :mod:`app.train.losses` — rate, MSE, LPIPS and TACO's joint CLIP loss.

Importing this package stays cheap (no torch); :func:`main` imports the CLI lazily.
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run the training CLI (see :func:`app.train.cli.main`)."""
    from app.train.cli import main as _main

    return _main(argv)


__all__ = ["main"]
