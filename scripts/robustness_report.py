#!/usr/bin/env python
"""Print the hostile-input corpus table of docs/ROBUSTNESS.md (Markdown), with time and memory.

For every kind of tests/hostile.py it runs, in this process:

* ``prepare_image(bytes)`` (UI defaults): "converted WxH (+ notices)" or the one-line refusal;
* the CLI, ``python -m app compress FILE -o OUT --model elic-tiny --allow-random`` through
  ``app.cli.main``: exit code and the last stderr line (``--no-codec`` skips it);

and records wall time and peak-RSS growth. Peak RSS is ``resource.getrusage().ru_maxrss``; before
each case the kernel's high-water mark is reset (``/proc/self/clear_refs`` = 5), so the figure is
that case's own peak above the RSS it started from (without that reset it is the growth of the
process-wide peak, flagged ``≥``).

``--forged`` adds the cost of decoding valid-CRC `.taco` files whose header claims a bigger image
than their strings hold (tiny models), the measurement behind ``TACO_MAX_PIXELS`` bound of `app.codecs.guards`.

Usage::

    .venv/bin/python scripts/robustness_report.py                  # corpus table
    .venv/bin/python scripts/robustness_report.py --forged         # + forged-size decode costs
    .venv/bin/python scripts/robustness_report.py --out table.md   # also write it to a file
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import os
import resource
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"  # tests/hostile.py is not part of the installed package
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import hostile  # noqa: E402  (tests/hostile.py: the corpus generator)

MB = 1 << 20


@dataclass
class Measured:
    text: str
    seconds: float
    peak_growth: int  # bytes
    exact: bool  # False: high-water mark could not be reset, growth of the process-wide peak


def _rss_now() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _maxrss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(fn: Callable[[], str]) -> Measured:
    exact = _reset_peak()
    base = _rss_now() if exact else _maxrss()
    t0 = time.perf_counter()
    text = fn()
    dt = time.perf_counter() - t0
    return Measured(text, dt, max(0, _maxrss() - base), exact)


def _cell(text: str, limit: int = 110) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def run_prepare(case: hostile.Case) -> Callable[[], str]:
    def fn() -> str:
        from app.errors import TacoError
        from app.images import prepare_image

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                arr, notices = prepare_image(case.data())
        except TacoError as exc:
            return f"refused: {exc}"
        note = f" ({'; '.join(notices)})" if notices else ""
        return f"converted {arr.shape[1]}x{arr.shape[0]}{note}"

    return fn


def run_cli(case: hostile.Case, workdir: Path) -> Callable[[], str]:
    def fn() -> str:
        from app.cli import main

        src = workdir / case.filename
        src.write_bytes(case.data())
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rc = main(["compress", str(src), "-o", str(workdir / "out.taco"), "--model", "elic-tiny",
                       "--allow-random"])
        lines = (err.getvalue() if rc else out.getvalue()).strip().splitlines()
        tail = lines[-1] if lines else ""
        if rc == 0:
            tail = tail.split(": ", 1)[-1].split(" (")[0]  # "N bytes, X bpp"
        return f"exit {rc}: {tail}"

    return fn


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    try:
        import torch
    except ImportError:
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def corpus_table(with_cli: bool) -> tuple[str, dict[str, int]]:
    rows = []
    stats = {"cases": 0, "converted": 0, "refused": 0, "mismatch": 0, "cli_bad_exit": 0}
    worst = (0, "")
    slowest = (0.0, "")
    header = "| # | kind | uploaded as | bytes | prepare_image (UI defaults) | ms | peak RSS +MB |"
    sep = "|---|---|---|---:|---|---:|---:|"
    if with_cli:
        header += " CLI compress (elic-tiny) |"
        sep += "---|"
    with tempfile.TemporaryDirectory() as tmp, one_torch_thread():
        for i, case in enumerate(hostile.corpus(), 1):
            m = measure(run_prepare(case))
            stats["cases"] += 1
            got = "ok" if m.text.startswith("converted") else "error"
            stats["converted" if got == "ok" else "refused"] += 1
            flag = "" if got == case.expect else " **(unexpected)**"
            stats["mismatch"] += bool(flag)
            mem = f"{'' if m.exact else '≥'}{m.peak_growth / MB:.0f}"
            if m.peak_growth > worst[0]:
                worst = (m.peak_growth, case.kind)
            if m.seconds > slowest[0]:
                slowest = (m.seconds, case.kind)
            row = (
                f"| {i} | `{case.kind}` — {_cell(case.what, 60)} | `{_cell(case.filename, 30)}` | "
                f"{len(case.data()):,} | {_cell(m.text)}{flag} | {m.seconds * 1e3:.0f} | {mem} |"
            )
            if with_cli:
                c = measure(run_cli(case, Path(tmp)))
                stats["cli_bad_exit"] += not c.text.startswith(("exit 0", "exit 2"))
                row += f" {_cell(c.text, 90)} |"
            rows.append(row)
    stats["worst_rss_mb"] = round(worst[0] / MB)
    summary = (
        f"\n{stats['cases']} kinds: {stats['converted']} converted, {stats['refused']} refused with "
        f"one line, {stats['mismatch']} unexpected"
        + (f", {stats['cli_bad_exit']} CLI exits other than 0/2" if with_cli else "")
        + f". Largest peak-RSS growth: {worst[0] / MB:.0f} MB ({worst[1]}); slowest: "
        f"{slowest[0]:.2f} s ({slowest[1]}).\n"
    )
    return "\n".join([header, sep, *rows]) + "\n" + summary, stats


def forged_table(sides: list[int]) -> str:
    """Decode cost of a valid-CRC file claiming side x side pixels (strings of a 64x64 image)."""
    import numpy as np

    from app import bitstream
    from app import codecs as codec
    from app.errors import TacoError
    from app.settings import get_settings

    lines = [
        f"Forged headers (valid CRC, strings of a 64x64 elic-tiny image; cap "
        f"`MAX_CODEC_PIXELS` = {get_settings().max_pixels:,} px):\n",
        "| claimed size | file bytes | outcome | s | peak RSS +MB |",
        "|---|---:|---|---:|---:|",
    ]
    with one_torch_thread():
        c = codec.load_codec("elic-tiny", allow_random=True)
        real = c.compress(np.zeros((64, 64, 3), np.uint8))
        h, strings = bitstream.unpack(real)
        for side in sides:
            data = bitstream.pack(dataclasses.replace(h, height=side, width=side), strings)

            def fn(data: bytes = data) -> str:
                try:
                    img = codec.decompress(data)
                except TacoError as exc:
                    return f"refused: {exc}"
                return f"decoded {img.size[0]}x{img.size[1]}"

            m = measure(fn)
            lines.append(
                f"| {side}x{side} | {len(data)} | {_cell(m.text, 90)} | {m.seconds:.1f} | "
                f"{m.peak_growth / MB:.0f} |"
            )
    return "\n".join(lines) + "\n"


def official_cost_table(sides: list[int]) -> str:
    """Decode time / memory of the official N192/M320 ELIC architecture (random weights, so no
    checkpoint is needed) for a forged claimed size: what a forged header costs a real model."""
    import torch

    from app.models.factory import create_model, load_config

    lines = [
        "Official architecture (`elic-official` config, random weights), decode of strings from a "
        "64x64 image at a claimed size:\n",
        "| claimed size | s | peak RSS +MB |",
        "|---|---:|---:|",
    ]
    with one_torch_thread():
        torch.manual_seed(0)
        model = create_model(load_config("elic-official"))
        model.eval()
        model.update(force=True)
        with torch.inference_mode():
            out = model.compress(torch.rand(1, 3, 64, 64))
            model.decompress(out["strings"], (1, 1))  # warm-up
            for side in sides:
                m = measure(lambda side=side: str(model.decompress(out["strings"], (side // 64, side // 64))["x_hat"].shape))
                lines.append(f"| {side}x{side} | {m.seconds:.1f} | {m.peak_growth / MB:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-codec", action="store_true", help="skip the CLI column (no models)")
    parser.add_argument("--no-corpus", action="store_true", help="skip the corpus table")
    parser.add_argument("--forged", action="store_true", help="add forged-size decode costs")
    parser.add_argument("--sides", default="256,512,1024,2049,16384",
                        help="claimed sides for --forged (comma-separated)")
    parser.add_argument("--official-cost", default="",
                        help="claimed sides to time on the official architecture, e.g. 256,512")
    parser.add_argument("--out", type=Path, help="also write the Markdown here")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    stats: dict[str, int] = {}
    text = ""
    if not args.no_corpus:
        text, stats = corpus_table(with_cli=not args.no_codec)
    if args.forged:
        text += "\n" + forged_table([int(s) for s in args.sides.split(",") if s.strip()])
    if args.official_cost:
        text += "\n" + official_cost_table([int(s) for s in args.official_cost.split(",") if s.strip()])
    text += f"\n_Generated by `scripts/robustness_report.py` in {time.perf_counter() - t0:.0f} s._\n"
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    return 1 if stats.get("mismatch") or stats.get("cli_bad_exit") else 0


if __name__ == "__main__":
    sys.exit(main())
