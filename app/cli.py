"""Command line: ``python -m app {compress,decompress,info,eval,bench,train} ...``.

Every command is ``main(argv) -> int`` so tests call it directly. Errors a user can cause end in
one line on stderr and a non-zero exit (2), never a traceback (set ``TACO_DEBUG=1`` to see one).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

from app.errors import TacoError, printable
from app.metrics import bpp
from app.settings import get_settings, set_settings

EXIT_USER = 2
EXIT_INTERNAL = 1


one_line = printable


def _add_compress(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compress", help="encode an image to a .taco bitstream")
    p.add_argument("input", help="image file (PNG, JPEG, WebP, ...)")
    p.add_argument("-o", "--output", required=True, help="output .taco file")
    p.add_argument("--model", default="taco", help="taco | elic | taco-official | elic-official")
    p.add_argument("--checkpoint", help="weights file (default: the shipped / official ones)")
    p.add_argument("--caption", default="", help="caption for TACO's encoder (costs no bits)")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--lmbda", type=float, help="rate parameter λ (bigger = more bits)")
    rate.add_argument("--target-bpp", type=float, help="search λ for this many bits per pixel")
    p.add_argument("--coding", choices=("portable", "float"), default="portable",
                   help="entropy-model arithmetic: portable (exact, decodes the same on every "
                   "machine; default) or float (the official float32 path, byte-compatible with "
                   "the official code on the CPU that encodes, not portable)")
    p.add_argument("--allow-random", action="store_true", help="random weights (development only)")
    p.set_defaults(func=_compress)


def _add_decompress(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("decompress", help="decode a .taco bitstream to PNG (no caption needed)")
    p.add_argument("input", help=".taco file")
    p.add_argument("-o", "--output", required=True, help="output image (PNG recommended)")
    p.add_argument("--allow-random", action="store_true", help="random weights (development only)")
    p.set_defaults(func=_decompress)


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="print the header of a .taco file")
    p.add_argument("input", help=".taco file")
    p.set_defaults(func=_info)


def _read_bytes(path: str) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise TacoError(f"no such file: {path}")
    return p.read_bytes()


def _write_bytes(path: str, data: bytes) -> None:
    p = Path(path)
    if p.parent and not p.parent.exists():
        raise TacoError(f"output folder does not exist: {p.parent}")
    p.write_bytes(data)


def _compress(args: argparse.Namespace) -> int:
    from app.codecs import load_codec
    from app.images import prepare_image

    arr, notices = prepare_image(_read_bytes(args.input), max_side=None)
    coding = {"coding": args.coding} if args.coding != "portable" else {}
    codec = load_codec(args.model, checkpoint=args.checkpoint, allow_random=args.allow_random,
                       **coding)
    for n in notices:
        print(f"note: {one_line(n)}", file=sys.stderr)
    h, w = arr.shape[:2]
    t0 = time.perf_counter()
    enc = codec.encode(arr, caption=args.caption, lmbda=args.lmbda, target_bpp=args.target_bpp)
    data = enc.data
    lam = enc.lmbda if codec.capabilities.learned else args.lmbda
    dt = time.perf_counter() - t0
    _write_bytes(args.output, data)
    if args.lmbda is not None and lam is not None and not math.isclose(lam, args.lmbda, rel_tol=1e-6):
        offered = (f"range {codec.rate_range[0]:g}–{codec.rate_range[1]:g}" if codec.rate_range
                   else "λ values " + ", ".join(f"{r:g}" for r in codec.rate_ladder or []))
        print(f"note: λ {args.lmbda:g} is not offered by {codec.name} ({offered}); used {lam:.6g}",
              file=sys.stderr)
    rate = f"λ={lam:.6g}, " if lam is not None else ""
    print(
        f"{one_line(args.output)}: {len(data)} bytes, {bpp(data, h, w):.4f} bpp "
        f"({w}x{h}, {rate}{codec.name}, {dt:.2f} s)"
    )
    return 0


def _decompress(args: argparse.Namespace) -> int:
    from app.codecs import decode_notes, decoder_key, decompress, load_codec, read_header

    data = _read_bytes(args.input)
    header = read_header(data)
    for note in decode_notes(header):
        print(f"note: {note}", file=sys.stderr)
    if args.allow_random:
        set_settings(get_settings().replace(allow_random=True))
    with contextlib.suppress(TacoError):  # load the weights outside the timing, as compress does;
        load_codec(*decoder_key(header))  # a failure is reported by decompress() below
    t0 = time.perf_counter()
    img = decompress(data)
    dt = time.perf_counter() - t0
    out = Path(args.output)
    if out.parent and not out.parent.exists():
        raise TacoError(f"output folder does not exist: {out.parent}")
    try:
        img.save(out)
    except (ValueError, KeyError):
        raise TacoError(f"cannot tell the image format from {out.name!r}; use .png") from None
    print(
        f"{one_line(args.output)}: {header.width}x{header.height} from {len(data)} bytes "
        f"({bpp(data, header.height, header.width):.4f} bpp, {header.model_id}, {dt:.2f} s)"
    )
    return 0


def _info(args: argparse.Namespace) -> int:
    from app.codecs import read_header

    data = _read_bytes(args.input)
    h = read_header(data)
    lam = "n/a" if h.lmbda is None else f"{h.lmbda:.6g}"
    print(
        f"model={h.model_id} weights={h.fingerprint.hex()} lambda={lam} "
        f"size={h.width}x{h.height} bytes={len(data)} bpp={bpp(data, h.height, h.width):.4f} "
        f"version={h.version} coding={h.coding}"
    )
    return 0


def _delegate(module: str) -> Callable[[list[str]], int]:
    def run(argv: list[str]) -> int:
        import importlib

        return int(importlib.import_module(module).main(argv) or 0)

    return run


#: Sub-commands implemented in their own modules, each with its own ``main(argv)``.
DELEGATED = {
    "eval": ("app.eval.cli", "rate–distortion evaluation: CSV, RD plots, BD-rates"),
    "bench": ("app.bench", "latency and memory benchmark (JSON)"),
    "train": ("app.train.cli", "train an embedded TACO / ELIC"),
    "fetch-official": ("app.fetch", "download + verify the official TACO / CLIP / ELIC weights"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m app", description="TACO demo toolkit: text-guided neural image compression"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_compress(sub)
    _add_decompress(sub)
    _add_info(sub)
    for name, (_, helptext) in DELEGATED.items():
        sub.add_parser(name, help=helptext, add_help=False)
    return parser


def _guarded(fn: Callable[[], int]) -> int:
    try:
        return fn()
    except TacoError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USER
    except (OSError, MemoryError) as exc:
        print(one_line(f"error: {type(exc).__name__}: {exc}"), file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # last line of defence: one line, no traceback
        if _debug():
            raise
        print(one_line(f"internal error: {type(exc).__name__}: {exc}"), file=sys.stderr)
        return EXIT_INTERNAL


def _debug() -> bool:
    try:
        return get_settings().debug
    except TacoError:
        return False


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:
        return _guarded(lambda: _delegate(DELEGATED[argv[0]][0])(argv[1:]))
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed a one-line usage error
        return int(exc.code or 0)
    return _guarded(lambda: args.func(args))
