"""Real entropy-coded bytes against the model's own estimate (−Σ log2 p) — the coding overhead.

    python scripts/coding_overhead.py --model elic --images ../shared/data/kodak --limit 4

For each image and λ it prints the estimated bits (eval forward: ŷ/ẑ likelihoods), the real
y and z string bytes from `compress`, the `.taco` container overhead and the relative
difference. Also times compress and decompress. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from app import bitstream
from app.codecs import LearnedCodec, load_codec, pad_tensor
from app.images import to_rgb_array


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="elic")
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=4)
    ap.add_argument("--lmbdas", default="", help="comma-separated λ (default: range ends + middle)")
    ap.add_argument("--allow-random", action="store_true")
    args = ap.parse_args(argv)

    codec = load_codec(args.model, allow_random=args.allow_random)
    assert isinstance(codec, LearnedCodec)
    if args.lmbdas:
        lams = [float(v) for v in args.lmbdas.split(",")]
    elif codec.rate_range:
        lo, hi = codec.rate_range
        lams = [lo, (lo * hi) ** 0.5, hi]
    else:
        lams = list(codec.rate_ladder or [])
    files = sorted(p for p in args.images.iterdir() if p.suffix.lower() in {".png", ".jpg"})
    files = files[: args.limit]
    print("| image | λ | est. bits | real y+z bytes | container bytes | bpp (file) | overhead vs estimate | enc s | dec s |")
    print("|---|---|---|---|---|---|---|---|---|")
    tot_est = tot_real = 0.0
    for f in files:
        arr = to_rgb_array(f)
        h, w = arr.shape[:2]
        x = pad_tensor(arr)
        text = codec.text_states("")
        for lam in lams:
            lam = codec.resolve_lmbda(lam)
            model = codec._model(codec._variant(lam))
            rate_arg = lam if codec.rate_range else None
            with torch.inference_mode():
                out = model(x, text, lmbda=rate_arg) if codec.arch == "taco" else model(x, lmbda=rate_arg)
            est = float(sum((-torch.log2(v)).sum() for v in out["likelihoods"].values()))
            t0 = time.perf_counter()
            data = codec.compress(arr, lmbda=lam)
            t1 = time.perf_counter()
            codec.decompress(data)
            t2 = time.perf_counter()
            _, strings = bitstream.unpack(data)
            real = sum(map(len, strings))
            tot_est += est
            tot_real += 8 * real
            print(
                f"| {f.name} | {lam:.4g} | {est:,.0f} | {real:,} | {len(data) - real} | "
                f"{8 * len(data) / (h * w):.4f} | {100 * (8 * real / est - 1):+.2f} % | "
                f"{t1 - t0:.2f} | {t2 - t1:.2f} |"
            )
    print(f"\nTotal: real y+z bits / estimate = {tot_real / tot_est:.4f} "
          f"({100 * (tot_real / tot_est - 1):+.2f} %)")
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    sys.exit(main())
