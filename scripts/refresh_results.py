"""Re-measure the embedded models' results of docs/RESULTS.md and (optionally) publish them.

    python scripts/refresh_results.py kodak coco captions [--publish]

Each step is a plain ``python -m app eval`` run (the exact command lands in each ``report.md``):

* ``kodak``: TACO, ELIC, JPEG, WebP, AVIF on Kodak-24 with the OFA captions, anchor JPEG, into
  ``out/kodak``; then TACO against ELIC (anchor ELIC) into ``out/kodak_taco_vs_elic``.
* ``coco``: the same on the 208 COCO val2017 images with their human captions (first caption of
  each list), into ``out/coco`` and ``out/coco_taco_vs_elic``.
* ``captions``: TACO on the first 8 Kodak images with the correct, the empty and another image's
  caption (``out/cap_{given,empty,other}``); prints the caption-effect table.

Classical rows are not re-measured when they exist: a new ``out/<set>`` is seeded with the JPEG /
WebP / AVIF rows of ``docs/results/<set>/results.csv`` (they do not depend on the trained
weights). Learned rows made by other weights are measured again (``provenance.json``).
``--publish`` copies the outputs to ``docs/results/``. The data comes from ``$TACO_SHARED`` or
``../shared`` beside the checkout.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from app.eval import cli
from app.eval.provenance import PROVENANCE_FILE
from app.eval.schema import Row, read_rows, write_rows
from app.settings import get_settings

ROOT = Path(__file__).resolve().parents[1]

LEARNED_RATES = ["--rates", "taco=0.0018,0.0054,0.0161,0.0483",
                 "--rates", "elic=0.0018,0.0054,0.0161,0.0483"]
CLASSICAL = ("jpeg", "webp", "avif")
SETS = {"kodak": ("kodak", "kodak/captions.json"),
        "coco": ("coco_val2017", "coco_val2017/captions.json")}
OUTPUTS = ("results.csv", "summary.json", "report.md", "rd_plots.html", "rd_plots.png",
           "plotly.min.js")


def data_arg(rel: str) -> str:
    """A data path as it should appear in recorded commands (relative when under ../shared)."""
    shared = get_settings().shared_dir
    default = ROOT.parent / "shared"
    base = "../shared" if shared.resolve() == default.resolve() else str(shared)
    return f"{base}/data/{rel}"


def seed(out: Path, source: Path, codecs: tuple[str, ...]) -> int:
    """Start ``out/results.csv`` with the ``codecs`` rows of ``source`` (if ``out`` has none)."""
    target = out / "results.csv"
    if target.exists() or not source.exists():
        return 0
    rows = [r for r in read_rows(source) if r.codec in codecs]
    out.mkdir(parents=True, exist_ok=True)
    write_rows(target, rows)
    return len(rows)


def copy_run(src: Path, dst: Path) -> None:
    """Reuse the rows (and their provenance) of ``src`` in ``dst``."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("results.csv", PROVENANCE_FILE):
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)


def run(argv: list[str]) -> None:
    print("$ python -m app eval " + " ".join(argv), flush=True)
    if cli.main(argv) != 0:
        raise SystemExit(f"eval failed: {' '.join(argv)}")


def rd_set(key: str) -> list[str]:
    folder, captions = SETS[key]
    out = Path("out") / key
    n = seed(out, ROOT / "docs" / "results" / key / "results.csv", CLASSICAL)
    if n:
        print(f"{out}: reusing {n} classical rows from docs/results/{key}/results.csv")
    common = ["--images", data_arg(folder), "--captions", data_arg(captions)]
    run([*common, "--codecs", "taco,elic,jpeg,webp,avif", *LEARNED_RATES, "--out", str(out),
         "--anchor", "jpeg", "--plotlyjs", "directory", "--no-progress"])
    vs = Path("out") / f"{key}_taco_vs_elic"
    copy_run(out, vs)
    run([*common, "--codecs", "taco,elic", *LEARNED_RATES, "--out", str(vs), "--anchor", "elic",
         "--plotlyjs", "directory", "--no-progress"])
    return [str(out), str(vs)]


def mean(rows: list[Row], col: str) -> float:
    return sum(getattr(r, col) for r in rows) / len(rows)


def caption_table(dirs: dict[str, Path], rates: list[str]) -> str:
    """Markdown table: means per caption mode and rate, deltas against the correct caption."""
    label = {"given": "correct", "empty": "empty", "other": "other image's"}
    lines = ["| λ | caption | bpp | PSNR dB | LPIPS | Δbpp | ΔPSNR dB | ΔLPIPS |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for rate in rates:
        rows = {mode: [r for r in read_rows(d / "results.csv")
                       if r.codec == "taco" and r.rate_key == rate] for mode, d in dirs.items()}
        # the same images in every mode (the "given" folder may hold more of them)
        common = set.intersection(*({r.image for r in rs} for rs in rows.values()))
        means = {mode: {c: mean([r for r in rs if r.image in common], c)
                        for c in ("bpp", "psnr", "lpips")} for mode, rs in rows.items()}
        g = means["given"]
        for mode, m in means.items():
            if mode == "given":
                delta = "| — | — | — |"
            else:
                delta = (f"| {100 * (m['bpp'] / g['bpp'] - 1):+.2f} % | {m['psnr'] - g['psnr']:+.3f} "
                         f"| {100 * (m['lpips'] / g['lpips'] - 1):+.2f} % |")
            lines.append(f"| {rate} | {label[mode]} | {m['bpp']:.4f} | {m['psnr']:.3f} | "
                         f"{m['lpips']:.4f} {delta}")
    return "\n".join(lines)


def captions_step() -> tuple[list[str], str]:
    rates = ["0.0054", "0.0161"]
    dirs = {m: Path("out") / f"cap_{m}" for m in ("given", "empty", "other")}
    copy_run(Path("out") / "kodak", dirs["given"])  # the correct-caption rows of the main run
    for mode, d in dirs.items():
        run(["--images", data_arg("kodak"), "--captions", data_arg("kodak/captions.json"),
             "--codecs", "taco", "--rates", ",".join(rates), "--limit", "8", "--caption-mode", mode,
             "--out", str(d), "--plotlyjs", "directory", "--no-progress"])
    table = caption_table(dirs, rates)
    print(table)
    return [str(d) for d in dirs.values()], table


def publish(out_dirs: list[str], table: str | None) -> None:
    docs = ROOT / "docs" / "results"
    for d in map(Path, out_dirs):
        name = d.name
        if name.startswith("cap_"):
            dst = docs / "kodak_caption_effect"
            dst.mkdir(parents=True, exist_ok=True)
            shutil.copy2(d / "results.csv", dst / f"{name.removeprefix('cap_')}.csv")
            continue
        dst = docs / name
        dst.mkdir(parents=True, exist_ok=True)
        shared_js = docs / "kodak" / "plotly.min.js"  # one copy of plotly.js (4.8 MB) in the repo
        for f in OUTPUTS:
            if not (d / f).exists() or (f == "plotly.min.js" and name != "kodak" and shared_js.exists()):
                continue
            if f == "rd_plots.html" and name != "kodak" and shared_js.exists():
                html = (d / f).read_text(encoding="utf-8")
                html = html.replace('src="plotly.min.js"', 'src="../kodak/plotly.min.js"')
                (dst / f).write_text(html, encoding="utf-8")
            else:
                shutil.copy2(d / f, dst / f)
        print(f"published {d} -> {dst.relative_to(ROOT)}")
    if table:
        (docs / "kodak_caption_effect" / "table.md").write_text(table + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("steps", nargs="+", choices=["kodak", "coco", "captions"])
    ap.add_argument("--publish", action="store_true", help="copy the outputs to docs/results/")
    args = ap.parse_args(argv)
    os.chdir(ROOT)  # out/ and the recorded commands are relative to the checkout
    out_dirs: list[str] = []
    table = None
    for step in args.steps:
        if step == "captions":
            dirs, table = captions_step()
            out_dirs += dirs
        else:
            out_dirs += rd_set(step)
    if args.publish:
        publish(out_dirs, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
