"""The evaluation run: measure every (image, codec, rate) unit, then write what it produced.

Outputs in the output folder: ``results.csv`` (one row per image × codec × rate, appended as it
goes; a re-run skips rows already there; columns: `app.eval.schema`), ``provenance.json``
(`app.eval.provenance`), ``summary.json`` (per codec and rate: the mean of each column over the
images, BD-rates and the comparison at matched bpp; `app.eval.bdrate`), ``report.md``
(`app.eval.report`), ``rd_plots.html`` and ``rd_plots.png`` (`app.eval.plots`; the PNG is
skipped if matplotlib is missing).

Sharding (`app.eval.distributed`, `app.eval.units`): under ``torchrun`` each rank measures every
``WORLD_SIZE``-th work unit into ``shards/rank*.csv``; rank 0 merges them into results.csv (in
unit order) and writes the rest. FID / KID (`app.realism`) are added to the summary and report
when Inception weights are available locally.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.errors import ConfigError, TacoError
from app.eval import captions as eval_captions
from app.eval import distributed
from app.eval import units as eu
from app.eval.bdrate import BdMethod, bd_rates, matched_bpp, summarize
from app.eval.plots import write_plotly, write_png
from app.eval.provenance import PROVENANCE_FILE, codec_identity, read_provenance, write_provenance
from app.eval.report import report_markdown
from app.eval.schema import Row, format_rate, read_rows, row_key
from app.realism import Realism


def _json_safe(value: Any) -> Any:
    """Replace non-finite floats (PSNR ∞ of a lossless file) by strings JSON can hold."""
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else ("-inf" if value < 0 else None)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


@dataclass
class EvalResult:
    """What `run_eval` produced."""

    out_dir: Path
    csv_path: Path
    summary_path: Path
    report_path: Path
    plot_paths: list[Path] = field(default_factory=list)
    computed: int = 0
    skipped: int = 0
    #: codec name -> number of reused rows dropped because its weights/encoder changed
    stale: dict[str, int] = field(default_factory=dict)
    summary: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    bd: dict[str, dict[str, float | None]] = field(default_factory=dict)


def run_eval(
    images: Path,
    codecs: Sequence[str],
    out_dir: Path,
    rates: Mapping[str, Sequence[float] | None] | None = None,
    captions: Path | None = None,
    anchor: str | None = None,
    limit: int | None = None,
    bd_method: BdMethod = "pchip",
    plotlyjs: bool | str = True,
    progress: bool = True,
    command: str | None = None,
    caption_mode: str = "given",
    select_by: str = "lpips",
    dist: distributed.DistInfo | None = None,
    realism: Realism | None = None,
    device: str = "cpu",
) -> EvalResult:
    """Evaluate ``codecs`` on the images of ``images``; write CSV, JSON, markdown and plots.

    ``rates[codec]`` lists λ (learned) or quality (classical); missing/None → `default_rates`.
    Rows already in ``out_dir/results.csv`` are reused, not recomputed. Summary, report and
    plots cover exactly the requested (image, codec, rate) set.

    ``caption_mode`` is a policy of `app.eval.captions` (``given``, ``each``, ``best-of``,
    ``empty``, ``other``); ``select_by`` is the column ``best-of`` minimises. Use a separate
    ``out_dir`` per mode.

    ``dist`` (from `app.eval.distributed.init`) shards the work: every rank measures its share of the
    units into its own file under ``out_dir/shards/``; rank 0 then merges them into
    results.csv and writes summary, report and plots. Every rank must call this with the same
    arguments; ranks other than 0 return a result without summary. A shard file left by a killed
    run is folded into results.csv at the next start, so any number of ranks can resume it.

    ``realism`` (`app.realism.resolve`) adds FID and KID of each (codec, rate) against the
    originals: features of every measured row go to ``out_dir/features/``; without it the report
    says in one line why there is no FID.
    """
    from app import realism as realism_mod

    info = dist or distributed.DistInfo()
    realism = realism or realism_mod.Realism.off("not requested")
    plan = eu.make_plan(images, codecs, rates, captions, limit, caption_mode, select_by, device)
    names = plan.names
    anchor = (anchor or ("jpeg" if "jpeg" in names else names[0])).lower()
    if anchor not in names:
        raise ConfigError(f"anchor {anchor!r} is not among the evaluated codecs")
    columns = plan.columns
    csv_path = out_dir / "results.csv"
    prov_path = out_dir / PROVENANCE_FILE
    result = EvalResult(out_dir, csv_path, out_dir / "summary.json", out_dir / "report.md")
    identity = {f"{n}@{format_rate(r)}": codec_identity(plan.codecs[n], r)
                for n in names for r in plan.rates[n]}
    units = plan.units()
    order = {u.key(): i for i, u in enumerate(units)}

    if info.main:  # one process prepares the folder while the others wait at the barrier
        # (if it fails, it exits and the launcher stops the other ranks)
        out_dir.mkdir(parents=True, exist_ok=True)
        prior = read_provenance(prov_path)
        if prior.get("caption_mode") not in (None, caption_mode) and (
                csv_path.exists() or eu.shard_files(out_dir)):
            raise ConfigError(f"{out_dir} holds caption-mode {prior['caption_mode']!r} results; "
                              f"use another --out for caption mode {caption_mode!r}")
        made_by = {**prior.get("rows", {})}

        def fresh(r: Row) -> bool:
            key = f"{r.codec}@{r.rate_key}"
            if key in identity and made_by.get(key, identity[key]) != identity[key]:
                result.stale[r.codec] = result.stale.get(r.codec, 0) + 1
                return False  # made by other weights / another encoder version: measure again
            return True

        eu.fold_shards(out_dir, columns, caption_mode, fresh, order)
        made_by.update(identity)
        write_provenance(prov_path, caption_mode, made_by)
    distributed.barrier(info)

    existing = read_rows(csv_path, columns)  # rank 0 already repaired it; nobody writes it now
    done = {row_key(r, caption_mode) for r in existing}
    mine = distributed.shard(units, info.rank, info.world)
    todo = [u for u in mine if u.key() not in done]
    target = csv_path
    if info.enabled:
        target = eu.shard_path(out_dir, info.rank)
        target.parent.mkdir(parents=True, exist_ok=True)
    store = realism_mod.FeatureStore(out_dir / realism_mod.FEATURE_DIR, realism)
    on_row: eu.RowHook | None = None
    if realism.enabled:
        def on_row(u: eu.Unit, row: Row, original: np.ndarray, decoded: np.ndarray) -> None:
            store.add(u.codec, u.rate, u.image, u.caption, original, decoded)
    new_rows = eu.compute_units(plan, todo, target, progress=progress, on_row=on_row)
    result.computed = len(new_rows)
    result.skipped = len(mine) - len(todo)
    distributed.barrier(info)
    if not info.main:
        return result

    if info.enabled:
        existing, added = eu.fold_shards(out_dir, columns, caption_mode, order=order)
        result.computed = added
        result.skipped = len(units) - added
    else:
        existing = existing + new_rows
    by_key = {row_key(r, caption_mode): r for r in existing}
    missing = [u.key() for u in units if u.key() not in by_key]
    if missing:
        raise TacoError(f"{len(missing)} rows missing after the run (first: {missing[0]}); run again")
    rows = [by_key[u.key()] for u in units]
    points = None
    if realism.enabled:
        points = realism_mod.summarize(store, rows, [f.name for f in plan.files],
                                       by_caption=caption_mode == "each")
    write_outputs(result, plan, rows, images=images, captions=captions, anchor=anchor,
                  bd_method=bd_method, plotlyjs=plotlyjs, command=command,
                  realism_note=realism.note, realism_points=points, realism_patch=realism.patch)
    return result


def write_outputs(result: EvalResult, plan: eu.EvalPlan, rows: Sequence[Row], *,
                  images: Path, captions: Path | None, anchor: str, bd_method: BdMethod,
                  plotlyjs: bool | str, command: str | None,
                  realism_note: str = "not requested",
                  realism_points: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
                  realism_patch: int = 0) -> None:
    """summary.json, report.md and the plots of ``rows`` (the rows of the plan, in unit order).

    ``realism_points`` ({codec: {rate: {fid, kid, kid_std, ...}}}, `app.realism.summarize`) adds
    ``fid`` / ``kid`` / ``kid_std`` to each summary point and a realism table to the report;
    without it the report says ``realism_note`` (why there is no FID) in one line.
    """
    names, files, caption_mode = plan.names, plan.files, plan.caption_mode
    summary = summarize(rows)
    result.summary = {n: summary[n] for n in names if n in summary}
    if realism_points is not None:
        for codec, pts in result.summary.items():
            for p in pts:
                got = realism_points.get(codec, {}).get(p["rate"], {})
                for k in ("fid", "kid", "kid_std"):
                    p[k] = got.get(k)
                p["fid_samples"] = got.get("samples")  # [originals, reconstructions]
                if got.get("missing"):
                    p["fid_missing"] = got["missing"]
    result.bd = bd_rates(result.summary, anchor, bd_method)
    samples = ("whole images resized to 299 by torch-fidelity" if realism_patch <= 0
               else f"non-overlapping {realism_patch}x{realism_patch} crops")
    payload = {
        "images": len(files),
        "rows": len(rows),
        "image_dir": str(images),
        "captions": str(captions) if captions else None,
        "caption_mode": caption_mode,
        "caption_policy": eval_captions.DESCRIPTIONS[caption_mode],
        **({"best_of_select_by": plan.select_by} if caption_mode == "best-of" else {}),
        "anchor": anchor,
        "bd_method": bd_method,
        "command": command,
        "conventions": {
            "bpp": "8*bytes/(H*W) of the original image, real encoded bytes",
            "psnr": "8-bit RGB, peak 255, mean of per-image dB",
            "psnr_float": "[0,1], unclamped x_hat (= psnr for 8-bit codecs); null if unavailable",
            "ms_ssim": "pytorch-msssim data_range=1 (shorter side <=160 px: both resized to 256)",
            "lpips": "LPIPS-alex v0.1, inputs scaled to [-1,1] (standard)",
            "lpips_paper": "LPIPS-alex v0.1, [0,1] inputs unscaled (TACO paper convention)",
        },
        "codecs": result.summary,
        "bd_rate": result.bd,
        "matched_bpp": matched_bpp(result.summary, anchor),
        "realism": {
            "computed": realism_points is not None,
            "note": realism_note,
            "samples": samples,
            "reference": "the original images of the run",
        },
    }
    result.summary_path.write_text(json.dumps(_json_safe(payload), indent=2) + "\n", encoding="utf-8")

    title = f"RD curves on {images.name} ({len(files)} images, captions: {caption_mode})"
    report = report_markdown(result.summary, result.bd, title=f"{images.name} ({len(files)} images)",
                             command=command, caption_mode=caption_mode, select_by=plan.select_by,
                             rows=len(rows), anchor=anchor, method=bd_method,
                             realism_note=realism_note, realism_computed=realism_points is not None,
                             realism_samples=samples)
    result.report_path.write_text(report, encoding="utf-8")
    out_dir = result.out_dir
    result.plot_paths.append(write_plotly(result.summary, out_dir / "rd_plots.html", title, plotlyjs))
    png = write_png(result.summary, out_dir / "rd_plots.png", title)
    if png is not None:
        result.plot_paths.append(png)
