"""Write the golden `.taco` files of tests/test_golden.py (run once per bitstream format).

    python scripts/golden_files.py --prefix elic-tiny-halfgrid [--out tests/data/golden]

Golden files pin what a released build wrote: every later build must decode them (the files'
own symbols check proves the entropy decoding is exact). They are made with the test-only
``elic-tiny`` model, whose fp16 weights are stored beside them so that no change of random
initialisation can invalidate them. Regenerate them only together with a new `.taco` version,
never to make a failing golden test pass: a failure means files users hold no longer decode.
The stored weights are reused when present, so every generation decodes with the same model.

Generations: ``elic-tiny-{low,high}`` (portable full-grid, the first version-2 build) and
``elic-tiny-halfgrid-{low,high}`` (portable half-grid, flag bit 1, wide arithmetic),
``elic-tiny-narrow-{low,high}`` (narrow arithmetic, flag bit 2).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from app import bitstream
from app.codecs import load_codec
from app.models.factory import save_weights

ROOT = Path(__file__).resolve().parents[1]

#: (tag, λ): the ends of elic-tiny's rate range.
RATES = (("low", 0.0018), ("high", 0.0483))
#: The source image: a crop of a shipped asset.
CROP = (slice(0, 48), slice(0, 80))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "golden")
    ap.add_argument("--prefix", required=True, help="file name stem, e.g. elic-tiny-halfgrid")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    weights = args.out / "elic-tiny.safetensors"
    if not weights.is_file():
        random = load_codec("elic-tiny", allow_random=True)
        save_weights(random._model(random._variants[0]), weights, half=True)
    codec = load_codec("elic-tiny", checkpoint=weights)
    img = np.asarray(Image.open(ROOT / "assets" / "coffee.png").convert("RGB"))[CROP]
    for tag, lmbda in RATES:
        data = codec.compress(img, lmbda=lmbda)
        (args.out / f"{args.prefix}-{tag}.taco").write_bytes(data)
        Image.fromarray(np.asarray(codec.decompress(data))).save(args.out / f"{args.prefix}-{tag}.png")
        h = bitstream.read_header(data)
        print(f"{tag}: {len(data)} bytes, version {h.version} {h.coding}, "
              f"symbols crc {h.symbols_crc:08x}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
