"""Reference RD curves: the published and measured results the RD plot draws."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.settings import get_settings
from app.ui.runs import CodecRun

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefCurve:
    """A reference rate–distortion curve (averaged over a dataset)."""

    name: str
    bpp: tuple[float, ...]
    psnr: tuple[float | None, ...] = ()
    lpips: tuple[float | None, ...] = ()
    lpips_convention: str = "standard"
    dataset: str = "Kodak"
    source: str = ""
    published: bool = False


#: Third-party published numbers (official TACO checkpoints and official ELIC on Kodak), drawn
#: dotted and labelled with their sources.
PUBLISHED_CURVES: tuple[RefCurve, ...] = (
    RefCurve(
        name="Official TACO checkpoints",
        bpp=(0.1825, 0.2265, 0.3215, 0.4498, 0.5663),
        lpips=(0.0255, 0.0240, 0.0215, 0.0173, 0.0143),
        lpips_convention="paper",
        source="yuenler/TACO (third-party run of the official code, OFA captions)",
        published=True,
    ),
    RefCurve(
        name="Official ELIC (MSE-trained)",
        bpp=(0.047, 0.077, 0.124, 0.196, 0.333, 0.491, 0.704, 0.857, 1.106, 1.490),
        psnr=(26.27, 27.68, 29.13, 30.70, 32.80, 34.59, 36.49, 37.62, 39.18, 41.07),
        source="JiangWeibeta/ELIC results/elic_official_kodak.csv",
        published=True,
    ),
)

_PSNR_KEYS = ("psnr", "psnr-rgb", "psnr_rgb", "psnr_db")
_LPIPS_KEYS = ("lpips", "lpips_standard", "lpips-standard", "lpips_alex")
_LPIPS_PAPER_KEYS = ("lpips_paper", "lpips-paper")


def _first(d: Mapping[str, Any], keys: Sequence[str]) -> Any:
    for k in keys:
        if k in d:
            return d[k]
    return None


def _floats(values: Any) -> tuple[float | None, ...]:
    out: list[float | None] = []
    for v in values or ():
        try:
            f = float(v)
            out.append(f if math.isfinite(f) else None)
        except (TypeError, ValueError):
            out.append(None)
    return tuple(out)


def _curves_from_results(
    name: str, res: Mapping[str, Any], dataset: str, source: str
) -> list[RefCurve]:
    bpp = _floats(res.get("bpp"))
    if not bpp or any(b is None for b in bpp):
        return []

    def column(keys: Sequence[str]) -> tuple[float | None, ...]:
        vals = _floats(_first(res, keys))
        ok = len(vals) == len(bpp) and any(v is not None for v in vals)
        return vals if ok else ()

    psnr, lp, lp_paper = column(_PSNR_KEYS), column(_LPIPS_KEYS), column(_LPIPS_PAPER_KEYS)
    xs = tuple(b for b in bpp if b is not None)
    curves = []
    if psnr or lp:
        curves.append(RefCurve(name, xs, psnr, lp, "standard", dataset, source))
    if lp_paper:
        curves.append(RefCurve(name, xs, (), lp_paper, "paper", dataset, source))
    return curves


def _curves_from_points(
    points: Sequence[Mapping[str, Any]], dataset: str, source: str
) -> list[RefCurve]:
    by_model: dict[str, list[Mapping[str, Any]]] = {}
    for p in points:
        if not isinstance(p, Mapping):
            continue
        name = p.get("model") or p.get("codec") or p.get("name")
        if name and "bpp" in p:
            by_model.setdefault(str(name), []).append(p)
    curves = []
    for name, pts in by_model.items():
        pts = sorted(pts, key=lambda q: float(q["bpp"]))
        res = {
            "bpp": [q["bpp"] for q in pts],
            "psnr": [_first(q, _PSNR_KEYS) for q in pts],
            "lpips": [_first(q, _LPIPS_KEYS) for q in pts],
            "lpips_paper": [_first(q, _LPIPS_PAPER_KEYS) for q in pts],
        }
        curves += _curves_from_results(name, res, dataset, source)
    return curves


_PRETTY = {
    "taco": "TACO",
    "elic": "ELIC",
    "jpeg": "JPEG",
    "webp": "WebP",
    "avif": "AVIF",
    "taco-official": "TACO (official)",
    "elic-official": "ELIC (official)",
}


def _pretty(name: str) -> str:
    return _PRETTY.get(name.strip().lower(), name)


def parse_reference_json(obj: Any, source: str = "") -> list[RefCurve]:
    """Read RD curves from the JSON shapes we accept (tolerant; unknown shapes give []).

    - `python -m app eval` summary: ``{"image_dir": ".../kodak", "codecs": {name: [{"bpp": ..,
      "psnr": .., "lpips": .., "lpips_paper": ..}, ...]}}`` (one point per rate)
    - CompressAI style: ``{"name": ..., "dataset"?: ..., "results": {"bpp": [...], "psnr": [...],
      "lpips": [...], "lpips_paper"?: [...]}}``
    - several models: ``{"models" | "curves" | "codecs": {name: {"bpp": [...], ...}}}``
    - points: ``[{"model": ..., "bpp": ..., "psnr": ..., "lpips": ...}, ...]`` or the same list
      under ``"points"`` / ``"rows"``.
    """
    curves: list[RefCurve] = []
    if isinstance(obj, list):
        return _curves_from_points(obj, "Kodak", source)
    if not isinstance(obj, Mapping):
        return curves
    dataset = obj.get("dataset")
    if not dataset and obj.get("image_dir"):
        dataset = Path(str(obj["image_dir"])).name.title()
    dataset = str(dataset or "Kodak")
    if isinstance(obj.get("results"), Mapping):
        curves += _curves_from_results(
            _pretty(str(obj.get("name") or obj.get("model") or source or "model")),
            obj["results"],
            dataset,
            source,
        )
    for key in ("models", "curves", "codecs"):
        block = obj.get(key)
        if isinstance(block, Mapping):
            for name, res in block.items():
                if isinstance(res, list):  # one point per rate
                    pts = [
                        {**p, "model": _pretty(str(name))} for p in res if isinstance(p, Mapping)
                    ]
                    curves += _curves_from_points(pts, dataset, source)
                elif isinstance(res, Mapping):
                    inner = res.get("results", res)
                    if isinstance(inner, Mapping):
                        curves += _curves_from_results(_pretty(str(name)), inner, dataset, source)
        elif isinstance(block, list):
            for item in block:
                if isinstance(item, Mapping):
                    curves += parse_reference_json(item, source)
    for key in ("points", "rows"):
        if isinstance(obj.get(key), list):
            curves += _curves_from_points(obj[key], dataset, source)
    return curves


def load_reference_curves(results_dir: Path | None = None, dataset: str | None = "Kodak"
                          ) -> list[RefCurve]:
    """Our own curves from docs/results/**/*.json (`python -m app eval`), if any.

    Only ``dataset`` (None: every dataset), and each (codec, dataset, LPIPS convention) once:
    several result folders hold the same measured rows (e.g. ``kodak`` and ``kodak_classical``).
    """
    found = _read_reference_curves(results_dir or get_settings().root / "docs" / "results")
    seen: set[tuple[str, str, str]] = set()
    curves: list[RefCurve] = []
    for c in found:
        key = (c.name, c.dataset, c.lpips_convention)
        if (dataset is None or c.dataset.lower() == dataset.lower()) and key not in seen:
            seen.add(key)
            curves.append(c)
    return curves


def _read_reference_curves(folder: Path) -> list[RefCurve]:
    curves: list[RefCurve] = []
    if not folder.is_dir():
        return curves
    for p in sorted(folder.rglob("*.json")):
        try:
            if p.stat().st_size > 8 * 1024 * 1024:
                continue
            obj = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            log.warning("cannot read reference curves from %s", p)
            continue
        curves += parse_reference_json(obj, source=f"docs/results/{p.relative_to(folder)}")
    return curves


@dataclass(frozen=True)
class RDPoint:
    label: str
    bpp: float
    psnr: float | None
    lpips: float | None
    row_id: str


def rd_points(runs: Iterable[CodecRun]) -> list[RDPoint]:
    return [
        RDPoint(
            r.label,
            r.bpp,
            r.psnr if math.isfinite(r.psnr) else None,
            r.lpips,
            r.row_id,
        )
        for r in runs
    ]
