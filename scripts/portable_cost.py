"""What the portable coding path costs against the official float path: BD-rate and time.

    python scripts/portable_cost.py rd --images ../shared/data/kodak        # BD-rate per model
    python scripts/portable_cost.py time --image ../shared/data/kodak/kodim01.png --repeats 5

``rd``: every image at each λ through real bitstreams with both paths (same weights, same
encoder transform), bpp from the file bytes, PSNR on the 8-bit output; prints mean bpp / PSNR per
λ and the BD-rate (PCHIP) of portable against float. ``time``: median encode and decode seconds
on one image for each path (weights loaded first, 2 threads, alternating the paths).
``--portable portable-wide`` compares the wide arithmetic of earlier builds' files instead.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from app.codecs import load_codec
from app.eval.bdrate import bd_rate
from app.metrics import bpp, psnr

LMBDAS = (0.0018, 0.0054, 0.0161, 0.0483)


def rd(images: list[Path], models: list[str], portable: str = "portable") -> dict:
    out: dict = {}
    for name in models:
        rows: dict[str, dict[float, list[tuple[float, float]]]] = {"float": {}, "portable": {}}
        for coding in rows:
            codec = load_codec(name, coding=portable if coding == "portable" else coding)
            for path in images:
                arr = np.asarray(Image.open(path).convert("RGB"))
                h, w = arr.shape[:2]
                for lam in LMBDAS:
                    data = codec.compress(arr, caption="", lmbda=lam)
                    rec = codec.decompress(data)
                    rows[coding].setdefault(lam, []).append((bpp(data, h, w), psnr(arr, rec)))
        curves = {c: ([float(np.mean([r[0] for r in rows[c][lam]])) for lam in LMBDAS],
                      [float(np.mean([r[1] for r in rows[c][lam]])) for lam in LMBDAS]) for c in rows}
        out[name] = {
            "curves": curves,
            "bd_rate_psnr_percent": bd_rate(*curves["float"], *curves["portable"]),
            "images": len(images),
        }
        print(json.dumps({name: out[name]}), flush=True)
    return out


def timing(image: Path, models: list[str], repeats: int, portable: str = "portable") -> dict:
    torch.set_num_threads(2)
    arr = np.asarray(Image.open(image).convert("RGB"))
    out: dict = {}
    for name in models:
        codecs = {c: load_codec(name, coding=portable if c == "portable" else c)
                  for c in ("float", "portable")}
        times: dict[str, dict[str, list[float]]] = {c: {"encode": [], "decode": []} for c in codecs}
        for codec in codecs.values():  # warm-up: weights, coder tables, first-call costs
            codec.decompress(codec.compress(arr, lmbda=0.0161))
        for _ in range(repeats):
            for c, codec in codecs.items():
                t0 = time.perf_counter()
                data = codec.compress(arr, lmbda=0.0161)
                t1 = time.perf_counter()
                codec.decompress(data)
                t2 = time.perf_counter()
                times[c]["encode"].append(t1 - t0)
                times[c]["decode"].append(t2 - t1)
        med = {c: {k: statistics.median(v) for k, v in d.items()} for c, d in times.items()}
        out[name] = {"median_s": med,
                     "ratio_encode": med["portable"]["encode"] / med["float"]["encode"],
                     "ratio_decode": med["portable"]["decode"] / med["float"]["decode"]}
        print(json.dumps({name: out[name]}), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("rd")
    a.add_argument("--images", type=Path, required=True)
    a.add_argument("--limit", type=int, default=None)
    a.add_argument("--models", default="elic,taco")
    b = sub.add_parser("time")
    b.add_argument("--image", type=Path, required=True)
    b.add_argument("--models", default="elic,taco")
    b.add_argument("--repeats", type=int, default=5)
    for sp in (a, b):
        sp.add_argument("--portable", default="portable",
                        help="the exact path to compare: portable (default), portable-wide, "
                             "portable-full")
    args = ap.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    if args.cmd == "rd":
        images = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".png", ".jpg"))
        rd(images[: args.limit] if args.limit else images, models, args.portable)
    else:
        timing(args.image, models, args.repeats, args.portable)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
