"""report.md: the means, BD-rate, matched-bpp and realism tables of an evaluation, as Markdown.

Numbers are shown with `app.display.fmt`: a missing value is "–", an infinite one "∞".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.display import MISSING, fmt
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
                f"| {codec} | {p['rate']} | {p['n']} | {fmt(p['bpp'], 3)} | {fmt(p['psnr'], 2)} | "
                f"{fmt(p['psnr_float'], 2)} | {fmt(p['ms_ssim'], 4)} | {fmt(p['lpips'], 4)} | "
                f"{fmt(p['lpips_paper'], 4)} | {fmt(p['encode_ms'], 1)} | {fmt(p['decode_ms'], 1)} |"
            )
    lines += ["", f"BD-rate against **{anchor}**{policy} ({method}; negative = fewer bits at equal "
              "quality):", "",
              "| codec | BD-rate PSNR | BD-rate MS-SSIM | BD-rate LPIPS |", "|---|---:|---:|---:|"]
    codecs = [c for c in summary if c != anchor]
    for codec in codecs:
        cells = []
        for metric in BD_METRICS:
            v = bd.get(metric, {}).get(codec)
            cells.append("n/a (no overlap)" if v is None else f"{fmt(v, 1, signed=True)} %")
        lines.append(f"| {codec} | " + " | ".join(cells) + " |")
    if not codecs:
        lines.append("| (only the anchor was evaluated) | | | |")
    matched = matched_bpp(summary, anchor)
    if any(matched.values()):
        lines += ["", f"At matched bpp{policy}: **{anchor}** read at each point's bpp (PCHIP over log bpp; "
                  f"{MISSING} outside {anchor}'s measured range):", "",
                  f"| codec | rate | bpp | PSNR | {anchor} PSNR | ΔPSNR dB | LPIPS | {anchor} LPIPS | ΔLPIPS |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for codec, rows in matched.items():
            for r in rows:
                lines.append(
                    f"| {codec} | {r['rate']} | {fmt(r['bpp'], 3)} | {fmt(r['psnr'], 2)} | "
                    f"{fmt(r['anchor_psnr'], 2)} | {fmt(r['delta_psnr'], 2, signed=True)} | {fmt(r['lpips'], 4)} | "
                    f"{fmt(r['anchor_lpips'], 4)} | {fmt(r['delta_lpips'], 4, signed=True)} |")
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
            kid = MISSING if p.get("kid") is None else f"{fmt(p['kid'] * 1e3, 2)} ± {fmt(p['kid_std'] * 1e3, 2)}"
            fid = fmt(p.get("fid"), 2)
            if p.get("fid_missing"):
                fid = f"{MISSING} ({p['fid_missing']} rows without features)"
            lines.append(f"| {codec} | {p['rate']} | {fmt(p['bpp'], 3)} | {fid} | {kid} |")
    return "\n".join(lines) + "\n"
