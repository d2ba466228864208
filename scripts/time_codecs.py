"""Compress/decompress wall time at 768x512: the shipped small models and official-size models.

    python scripts/time_codecs.py [--image ../shared/data/kodak/kodim01.png]

The official-size models use random weights (none can be shipped): their rate, and so the
entropy-coding share of the time, differs from trained weights.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from app.codecs import decompress, load_codec
from app.images import to_rgb_array
from app.models.factory import create_model


def best(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", type=Path, default=Path("../shared/data/kodak/kodim01.png"))
    args = ap.parse_args(argv)
    img = to_rgb_array(args.image)
    h, w = img.shape[:2]
    caption = "a brick building with a red door"
    for name in ("elic", "taco"):
        codec = load_codec(name)
        codec.compress(img, caption=caption)  # warm-up
        t_enc, data = best(lambda c=codec: c.compress(img, caption=caption), 3)
        t_dec, _ = best(lambda d=data: decompress(d), 3)
        print(f"{name} (shipped): compress {t_enc:.2f} s, decompress {t_dec:.2f} s, "
              f"{8 * len(data) / (h * w):.3f} bpp")
    x = torch.from_numpy(img.astype(np.float32) / 255).permute(2, 0, 1)[None]
    for cfg in ("elic-official", "taco-official"):
        torch.manual_seed(0)
        model = create_model(cfg).eval()
        model.update(force=True)
        text = torch.randn(1, 38, 512) if cfg.startswith("taco") else None
        with torch.inference_mode():
            t_enc, out = best(lambda m=model, t=text: m.compress(x, t), 2)
            t_dec, _ = best(lambda m=model, o=out: m.decompress(o["strings"], o["shape"]), 2)
        nbytes = sum(len(s[0]) for s in out["strings"])
        print(f"{cfg} (random weights): compress {t_enc:.2f} s, decompress {t_dec:.2f} s, "
              f"{8 * nbytes / (h * w):.2f} bpp")
    return 0


if __name__ == "__main__":
    sys.exit(main())
