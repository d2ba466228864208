"""Training for the embedded ELIC / TACO codecs (``python -m app train --config CONFIG``).

* :mod:`app.train.data` — captioned image sources, RAM-cached random crops, eval-folder guard;
* :mod:`app.train.losses` — rate, MSE, LPIPS and TACO's joint CLIP loss;
* :mod:`app.train.loop` — the resumable (DDP-capable) training loop and its CLI ``main(argv)``.

Importing this package stays cheap (no torch); :func:`main` imports the loop lazily.
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run the training CLI (see :func:`app.train.loop.main`)."""
    from app.train.loop import main as _main

    return _main(argv)


__all__ = ["main"]
