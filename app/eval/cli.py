"""``python -m app eval``: rate–distortion evaluation of codecs on a folder of images.

For every (image, codec, rate) the codec really encodes and decodes the image (`app.eval.measure`);
the rows go to ``results.csv`` (`app.eval.schema`) and the means, BD-rates (`app.eval.bdrate`),
report and plots are written beside it (`app.eval.runner`).

Captions (``--captions JSON``): an object mapping file name (or file stem) to a caption string
or a list of captions. ``--caption-mode`` picks the policy (`app.eval.captions`): ``given`` (the
first caption), ``each`` (one row per caption), ``best-of`` (the lowest-LPIPS of all captions),
``empty``, ``other``; ``each`` and ``best-of`` add a ``caption`` column (the caption's index).
Images without an entry get the empty caption. Classical codecs ignore captions.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from app.errors import TacoError
from app.eval import distributed
from app.eval.captions import CAPTION_MODES, SELECT_COLUMNS
from app.eval.rates import DEFAULT_CLASSICAL_RATES, LEARNED_DEFAULT_POINTS, parse_rates
from app.eval.runner import run_eval

_EPILOG = """\
default rates:
  jpeg  quality {jpeg}
  webp  quality {webp}
  avif  quality {avif}
  learned codecs (taco, elic, ...): λ values — the codec's rate_ladder (fixed-rate families),
        else {n} log-spaced λ over its rate_range

--rates examples:  --rates 30,50,70   (all codecs)   --rates jpeg=10,50 --rates taco=0.0008,0.004
outputs in --out:  results.csv, summary.json, report.md, rd_plots.html, rd_plots.png
sharded:  torchrun --nproc_per_node N -m app eval ... (each rank measures every N-th row into
          --out/shards/, rank 0 merges them; --out must be on a filesystem all ranks share)
re-running with the same --out skips (image, codec, rate) rows already in results.csv,
unless provenance.json shows they were made by other weights (then they are measured again).
""".format(
    n=LEARNED_DEFAULT_POINTS,
    **{k: ",".join(f"{v:g}" for v in vs) for k, vs in DEFAULT_CLASSICAL_RATES.items()},
)


def setup_args(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Add the ``eval`` options to ``parser`` (a new parser when None) and return it."""
    if parser is None:
        parser = argparse.ArgumentParser(prog="python -m app eval")
    parser.description = "Rate-distortion evaluation of codecs on a folder of images."
    parser.epilog = _EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--images", type=Path, required=True, help="folder of images (sorted by name)")
    parser.add_argument("--captions", type=Path, default=None,
                        help="JSON: file name -> caption or list of captions (--caption-mode says which are used)")
    parser.add_argument("--codecs", default="jpeg,webp,avif",
                        help="comma-separated: jpeg, webp, avif, taco, elic, ... (default: %(default)s)")
    parser.add_argument("--rates", action="append", default=None, metavar="[CODEC=]R1,R2,...",
                        help="rates: λ for learned codecs, quality 1-100 for classical (repeatable)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--anchor", default=None, help="BD-rate anchor codec (default: jpeg if listed)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    parser.add_argument("--bd-method", choices=["pchip", "cubic"], default="pchip",
                        help="BD-rate interpolation (default: %(default)s)")
    parser.add_argument("--plotlyjs", choices=["inline", "directory", "cdn"], default="inline",
                        help="how rd_plots.html gets plotly.js (inline: self-contained, ~4.8 MB)")
    parser.add_argument(
        "--caption-mode", choices=CAPTION_MODES, default="given",
        help="caption policy: given = each image's first caption; each = every caption, one row "
             "per caption; best-of = encode with every caption and keep the reconstruction with "
             "the lowest LPIPS against the original (what the official COCO-30k script meant: "
             "its released version starts the best LPIPS at 0.0, so it never selects and its "
             "averages use the last caption); empty = no caption; other = the next image's "
             "caption (mismatched). Use one --out per policy")
    parser.add_argument("--best-of-by", choices=SELECT_COLUMNS, default="lpips",
                        help="the LPIPS best-of minimises: lpips (standard, the headline) or "
                             "lpips_paper ([0,1] inputs, the official scripts' convention)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="cpu: gloo process group under torchrun; cuda: NCCL, each rank "
                             "pinned to GPU LOCAL_RANK, where its learned codecs and FID's "
                             "Inception run (files stay portable: they decode the same on CPU)")
    parser.add_argument("--inception-weights", type=Path, default=None, metavar="PATH",
                        help="torch-fidelity Inception weights for FID/KID (default: its file in "
                             "the torch hub cache, if there; never downloaded)")
    parser.add_argument("--no-fid", action="store_true", help="no FID/KID even if weights are found")
    parser.add_argument("--fid-patch", type=int, default=0, metavar="P",
                        help="FID/KID samples: 0 = whole images (resized to 299), P = "
                             "non-overlapping PxP crops (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    return parser


def run_from_args(args: argparse.Namespace, argv: Sequence[str] | None = None) -> int:
    """Run ``eval`` from parsed arguments; prints the outputs; returns the exit code.

    Under torchrun every rank runs this; rank 0 prints the report, the others one line each.
    """
    from app import realism

    codecs = [c.strip().lower() for c in args.codecs.split(",") if c.strip()]
    plotlyjs: bool | str = True if args.plotlyjs == "inline" else args.plotlyjs
    command = None
    if argv is not None:
        command = "python -m app eval " + " ".join(shlex.quote(a) for a in argv)
    try:
        info = distributed.init(args.device)
    except TacoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if command is not None and info.enabled:
        command = command.replace("python -m app eval", f"torchrun ({info.world} ranks) -m app eval", 1)
    try:
        real = realism.resolve(args.inception_weights, not args.no_fid, args.device, args.fid_patch)
        result = run_eval(
            args.images, codecs, args.out, rates=parse_rates(args.rates, codecs),
            captions=args.captions, anchor=args.anchor, limit=args.limit,
            bd_method=args.bd_method, plotlyjs=plotlyjs,
            progress=not args.no_progress and info.main,
            command=command, caption_mode=args.caption_mode, select_by=args.best_of_by, dist=info,
            realism=real, device=args.device,
        )
    except TacoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2  # the CLI's exit code for user errors
    finally:
        distributed.finish(info)
    if not info.main:
        print(f"rank {info.rank}: {result.computed} measured, {result.skipped} reused")
        return 0
    for name, n in result.stale.items():
        print(f"{name}: weights or encoder changed since {result.csv_path} was written; "
              f"{n} old rows measured again")
    print(f"{result.computed} measured, {result.skipped} reused from {result.csv_path}")
    print(result.report_path.read_text(encoding="utf-8"))
    for path in [result.csv_path, result.summary_path, result.report_path, *result.plot_paths]:
        print(f"wrote {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m app eval …``; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = setup_args().parse_args(argv)
    return run_from_args(args, argv)


if __name__ == "__main__":
    sys.exit(main())
