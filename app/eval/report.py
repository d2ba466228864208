"""report.md: the means, BD-rate, matched-bpp and realism tables of an evaluation, as Markdown."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from app.eval import captions as eval_captions
from app.eval.bdrate import BD_METRICS, BdMethod, matched_bpp


def report_markdown(summary: Mapping[str, list[dict[str, Any]]],
                    bd: Mapping[str, Mapping[str, float | None]], *, title: str,
                    command: str | None, caption_mode: str, select_by: str, rows: int,
                    anchor: str, method: BdMethod, realism_note: str, realism_computed: bool,
                    realism_samples: str) -> str:
    """The whole report.md: title, the command that made it, the caption policy, every table."""
    report = [f"# Evaluation: {title}", ""]
    if command:
        report += ["```", command, "```", ""]
    policy = f"{caption_mode}: {eval_captions.DESCRIPTIONS[caption_mode]}"
    if caption_mode == "best-of":
        policy += f" (selected by {select_by})"
    report += [f"Caption policy of every table below: **{policy}**; {rows} rows.", ""]
    report.append(markdown_tables(summary, bd, anchor, method, caption_mode=caption_mode))
    report.append(realism_table(summary, caption_mode, realism_note, realism_computed,
                                realism_samples))
    return "\n".join(report)


def _cell(value: Any, digits: int) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    return f"{value:.{digits}f}"


def markdown_tables(summary: Mapping[str, list[dict[str, Any]]],
                    bd: Mapping[str, Mapping[str, float | None]], anchor: str,
                    method: BdMethod, caption_mode: str | None = None) -> str:
    """The mean table and the BD-rate table as markdown (each headed by its caption policy)."""
    policy = f" (captions: {caption_mode})" if caption_mode else ""
    lines = [
        f"Means per codec and rate{policy}:",
        "",
        "| codec | rate | n | bpp | PSNR (dB) | PSNR float (dB) | MS-SSIM | LPIPS | LPIPS (paper conv.) | enc ms | dec ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for codec, points in summary.items():
        for p in points:
            lines.append(
                f"| {codec} | {p['rate']} | {p['n']} | {_cell(p['bpp'], 3)} | {_cell(p['psnr'], 2)} | "
                f"{_cell(p['psnr_float'], 2)} | {_cell(p['ms_ssim'], 4)} | {_cell(p['lpips'], 4)} | "
                f"{_cell(p['lpips_paper'], 4)} | {_cell(p['encode_ms'], 1)} | {_cell(p['decode_ms'], 1)} |"
            )
    lines += ["", f"BD-rate against **{anchor}**{policy} ({method}; negative = fewer bits at equal "
              "quality):", "",
              "| codec | BD-rate PSNR | BD-rate MS-SSIM | BD-rate LPIPS |", "|---|---:|---:|---:|"]
    codecs = [c for c in summary if c != anchor]
    for codec in codecs:
        cells = []
        for metric in BD_METRICS:
            v = bd.get(metric, {}).get(codec)
            cells.append("n/a (no overlap)" if v is None else f"{v:+.1f} %")
        lines.append(f"| {codec} | " + " | ".join(cells) + " |")
    if not codecs:
        lines.append("| (only the anchor was evaluated) | | | |")
    matched = matched_bpp(summary, anchor)
    if any(matched.values()):
        lines += ["", f"At matched bpp{policy}: **{anchor}** read at each point's bpp (PCHIP over log bpp; "
                  f"– outside {anchor}'s measured range):", "",
                  f"| codec | rate | bpp | PSNR | {anchor} PSNR | ΔPSNR dB | LPIPS | {anchor} LPIPS | ΔLPIPS |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for codec, rows in matched.items():
            for r in rows:
                lines.append(
                    f"| {codec} | {r['rate']} | {_cell(r['bpp'], 3)} | {_cell(r['psnr'], 2)} | "
                    f"{_cell(r['anchor_psnr'], 2)} | {_signed(r['delta_psnr'], 2)} | {_cell(r['lpips'], 4)} | "
                    f"{_cell(r['anchor_lpips'], 4)} | {_signed(r['delta_lpips'], 4)} |")
    return "\n".join(lines) + "\n"


def realism_table(summary: Mapping[str, list[dict[str, Any]]], caption_mode: str, note: str,
                  computed: bool, samples: str) -> str:
    """The FID / KID table, or one line saying why there is none."""
    if not computed:
        return f"\nFID / KID: not computed: {note}.\n"
    lines = ["", f"Realism against the originals (captions: {caption_mode}; {note}; {samples}; "
             "lower is better; KID ×1000, mean ± std over subsets):", "",
             "| codec | rate | bpp | FID | KID ×1000 |", "|---|---:|---:|---:|---:|"]
    for codec, points in summary.items():
        for p in points:
            kid = "–" if p.get("kid") is None else f"{p['kid'] * 1e3:.2f} ± {p['kid_std'] * 1e3:.2f}"
            fid = _cell(p.get("fid"), 2)
            if p.get("fid_missing"):
                fid = f"– ({p['fid_missing']} rows without features)"
            lines.append(f"| {codec} | {p['rate']} | {_cell(p['bpp'], 3)} | {fid} | {kid} |")
    return "\n".join(lines) + "\n"


def _signed(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:+.{digits}f}"
