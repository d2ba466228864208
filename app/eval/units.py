"""Work units of ``python -m app eval``: the plan, measuring units, and the per-rank shard files.

A unit is one results.csv row: (image, codec, rate), and under ``--caption-mode each`` one
caption of it. `EvalPlan.units` lists them in a fixed order (image-major), which is the order
rows are written in and what `app.eval.distributed.shard` splits between ranks. Each rank appends its
rows to its own shard file as they are measured; `fold_shards` merges shard files into
results.csv (at the end of a sharded run, and at the start of any run, so a killed run loses
only the rows in flight).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.codecs.protocol import Codec
from app.errors import ConfigError
from app.eval import captions as eval_captions
from app.eval.captions import INDEXED_MODES
from app.eval.io import list_images, load_rgb
from app.eval.measure import get_codec, measure_decoded
from app.eval.rates import default_rates
from app.eval.schema import (
    Row,
    RowAppender,
    csv_columns,
    format_rate,
    read_rows,
    row_key,
    write_rows,
)


@dataclass(frozen=True)
class Unit:
    """One work unit: an (image, codec, rate) row, and under ``each`` one caption of it."""

    image: str
    codec: str
    rate: str
    #: index of the caption among the image's captions under ``each``, else ""
    caption: str = ""

    def key(self) -> tuple[str, ...]:
        base = (self.image, self.codec, self.rate)
        return (*base, self.caption) if self.caption else base


@dataclass
class EvalPlan:
    """Everything a rank needs to measure its units; the same on every rank."""

    files: list[Path]
    names: list[str]
    codecs: dict[str, Codec]
    rates: dict[str, list[float]]
    #: file name -> candidate captions under ``caption_mode`` (`app.eval.captions.policy_captions`)
    captions: dict[str, list[str]]
    caption_mode: str = "given"
    #: the column ``best-of`` minimises
    select_by: str = "lpips"

    @property
    def columns(self) -> tuple[str, ...]:
        return csv_columns(self.caption_mode)

    def units(self) -> list[Unit]:
        """All units, image-major, then codec, rate and caption: the order rows are written in.

        Under ``each`` a learned codec gets one unit per caption; a classical codec, which
        ignores captions, one unit (caption 0) instead of several identical ones.
        """
        from app.codecs.classical import is_classical

        out: list[Unit] = []
        for f in self.files:
            for name in self.names:
                n_caps = 0
                if self.caption_mode == "each":
                    n_caps = 1 if is_classical(name) else len(self.captions[f.name])
                for rate in self.rates[name]:
                    if n_caps:
                        out += [Unit(f.name, name, format_rate(rate), str(i)) for i in range(n_caps)]
                    else:
                        out.append(Unit(f.name, name, format_rate(rate)))
        return out


def make_plan(images: Path, codecs: Sequence[str], rates: Mapping[str, Sequence[float] | None] | None,
              captions: Path | None, limit: int | None, caption_mode: str,
              select_by: str = "lpips", device: str = "cpu") -> EvalPlan:
    """Resolve images, captions, codecs and rates (loads the codecs, learned ones on ``device``)."""
    names = [c.strip().lower() for c in codecs if c.strip()]
    if not names:
        raise ConfigError("no codec given")
    if len(set(names)) != len(names):
        raise ConfigError(f"codec listed twice: {', '.join(names)}")
    if select_by not in eval_captions.SELECT_COLUMNS:
        raise ConfigError(f"best-of selects by one of {', '.join(eval_captions.SELECT_COLUMNS)}")
    files = list_images(images, limit)
    per_image = eval_captions.policy_captions(caption_mode, files,
                                              eval_captions.load_caption_lists(captions))
    loaded = {name: get_codec(name, device) for name in names}
    plan = {
        name: [float(r) for r in ((rates or {}).get(name) or default_rates(name, codec))]
        for name, codec in loaded.items()
    }
    return EvalPlan(files, names, loaded, plan, per_image, caption_mode, select_by)


#: Called for every measured row before it is written: (unit, row, original, decoded).
RowHook = Callable[[Unit, Row, np.ndarray, np.ndarray], None]


def measure_unit(plan: EvalPlan, unit: Unit, pixels: np.ndarray,
                 lpips_fn: Callable[..., float] | None = None) -> tuple[Row, np.ndarray]:
    """The row of one unit and its decoded image, under the plan's caption policy.

    ``best-of`` encodes with every caption and keeps the row with the lowest ``select_by``
    (classical codecs ignore captions: they are encoded once, with caption 0).
    """
    from app.codecs.classical import is_classical

    codec = plan.codecs[unit.codec]
    caps = plan.captions[unit.image]
    if unit.caption:
        indices = [int(unit.caption)]
    elif plan.caption_mode == "best-of" and not is_classical(unit.codec):
        indices = list(range(len(caps)))
    else:
        indices = [0]
    tried: list[tuple[Row, np.ndarray]] = []
    for i in indices:
        row, decoded = measure_decoded(codec, pixels, caps[i], float(unit.rate), lpips_fn)
        row = dataclasses.replace(row, image=unit.image, codec=unit.codec,
                                  caption=i if plan.caption_mode in INDEXED_MODES else None)
        tried.append((row, decoded))
    return tried[eval_captions.pick_best([r for r, _ in tried], plan.select_by)]


def compute_units(plan: EvalPlan, units: Sequence[Unit], path: Path, progress: bool = True,
                  on_row: RowHook | None = None, lpips_fn: Callable[..., float] | None = None
                  ) -> list[Row]:
    """Measure ``units`` (grouped by image, each image read once), appending every row to
    ``path`` as soon as it is measured (a killed run keeps what it finished); returns the rows."""
    from tqdm import tqdm

    by_image: dict[str, list[Unit]] = {}
    for u in units:
        by_image.setdefault(u.image, []).append(u)
    rows: list[Row] = []
    with RowAppender(path, plan.columns) as appender:
        bar = tqdm(total=len(units), disable=not progress, file=sys.stderr, unit="enc")
        for f in plan.files:
            jobs = by_image.get(f.name)
            if not jobs:
                continue
            pixels = load_rgb(f)
            for u in jobs:
                bar.set_postfix_str(f"{f.name} {u.codec}@{u.rate}")
                row, decoded = measure_unit(plan, u, pixels, lpips_fn)
                if on_row is not None:
                    on_row(u, row, pixels, decoded)
                appender.append(row)
                rows.append(row)
                bar.update(1)
        bar.close()
    return rows


SHARD_DIR = "shards"


def shard_path(out_dir: Path, rank: int) -> Path:
    """Where rank ``rank`` of a sharded run appends its rows."""
    return out_dir / SHARD_DIR / f"rank{rank:05d}.csv"


def shard_files(out_dir: Path) -> list[Path]:
    folder = out_dir / SHARD_DIR
    return sorted(folder.glob("rank*.csv")) if folder.is_dir() else []


def _dedupe(rows: Iterable[Row], caption_mode: str) -> list[Row]:
    seen: set[tuple[str, ...]] = set()
    out = []
    for r in rows:
        k = row_key(r, caption_mode)
        if k not in seen:
            seen.add(k)
            out.append(r)
    return out


def fold_shards(out_dir: Path, columns: Sequence[str], caption_mode: str,
                keep: Callable[[Row], bool] = lambda r: True,
                order: Mapping[tuple[str, ...], int] | None = None) -> tuple[list[Row], int]:
    """Merge results.csv and every shard file into results.csv, then delete the shards.

    Each key is kept once (results.csv wins over shards); rows failing ``keep`` are dropped. When
    shard rows are added and ``order`` (unit key -> position) is given, the file is written in
    unit order, so a sharded run's results.csv does not depend on which rank finished first.
    The file is rewritten only when something changes. Returns (rows, shard rows added).
    """
    csv_path = out_dir / "results.csv"
    base = read_rows(csv_path, columns)
    shards = shard_files(out_dir)
    extra = [r for p in shards for r in read_rows(p, columns)]
    kept = [r for r in base if keep(r)]
    known = {row_key(r, caption_mode) for r in kept}
    new = _dedupe((r for r in extra if keep(r) and row_key(r, caption_mode) not in known), caption_mode)
    rows = kept + new
    if new and order is not None:  # stable: rows outside this plan keep their order, at the end
        rows.sort(key=lambda r: order.get(row_key(r, caption_mode), len(order)))
    if new or len(kept) != len(base):
        write_rows(csv_path, rows, columns)
    for p in shards:  # after results.csv holds their rows: a kill in between loses nothing
        p.unlink()
    if shards and not any((out_dir / SHARD_DIR).iterdir()):
        (out_dir / SHARD_DIR).rmdir()
    return rows, len(new)
