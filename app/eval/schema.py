"""The results schema of ``python -m app eval``: the results.csv columns, the typed row, and its cells.

One row per (image, codec, rate) and, under ``--caption-mode each``, per caption:

==============  ============================================================================
column          meaning
==============  ============================================================================
image           file name inside ``--images``
codec, rate     codec name; λ for learned codecs, quality 1–100 for classical ones
width, height   original size; ``bytes``, ``bpp`` from the real encoded file
psnr            8-bit RGB PSNR (decoded image as the user gets it) — the headline
psnr_float      paper convention: [0, 1], x̂ unclamped/unrounded; needs the codec's optional
                ``decompress_float(data) -> HxWx3 float array`` hook. For 8-bit codecs (JPEG,
                WebP, AVIF) it is the same number as ``psnr``; empty when unavailable
ms_ssim         pytorch-msssim, data_range 1; ``ms_ssim_resized`` = 1 when the images were
                resized to a 256-px shorter side first (shorter side ≤ 160 px)
lpips           LPIPS-alex v0.1, standard convention (inputs scaled to [-1, 1])
lpips_paper     LPIPS-alex v0.1, TACO paper convention ([0, 1] inputs, no scaling)
encode_ms       wall time of ``compress`` (includes any text encoding for learned codecs)
decode_ms       wall time of ``decompress``
caption         (``each`` / ``best-of`` only) index of the caption used
==============  ============================================================================

`Row` holds the numbers as numbers. `format_cell` and `parse_cell` are the one conversion between
a value and its CSV cell: a missing or NaN value is an empty cell, an infinite one ``inf`` /
``-inf``, and every metric has a fixed number of decimals. A measured value is stored already
rounded to its cell (`stored`), so a row read back from the file equals the row measured, and a
file rewritten from its rows is byte for byte the same.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from app.errors import TacoError
from app.eval.captions import INDEXED_MODES

CSV_COLUMNS: tuple[str, ...] = (
    "image", "codec", "rate", "width", "height", "bytes", "bpp",
    "psnr", "psnr_float", "ms_ssim", "ms_ssim_resized", "lpips", "lpips_paper",
    "encode_ms", "decode_ms",
)
#: Extra results.csv column of the ``each`` / ``best-of`` policies: index of the caption used.
CAPTION_COLUMN = "caption"

#: Decimals of each float column in results.csv.
DIGITS: dict[str, int] = {
    "bpp": 6, "psnr": 4, "psnr_float": 4, "ms_ssim": 6, "lpips": 6, "lpips_paper": 6,
    "encode_ms": 2, "decode_ms": 2,
}
_INTS = ("width", "height", "bytes")


def csv_columns(caption_mode: str = "given") -> tuple[str, ...]:
    """The results.csv header a caption policy writes (`CSV_COLUMNS`, + ``caption`` if indexed)."""
    return (*CSV_COLUMNS, CAPTION_COLUMN) if caption_mode in INDEXED_MODES else CSV_COLUMNS


def format_rate(rate: float) -> str:
    """Canonical text of a rate value (the CSV key): ``50``, ``0.0008``."""
    return f"{float(rate):g}"


@dataclass(frozen=True)
class Row:
    """One results.csv row, typed; None where a value is missing (an empty cell)."""

    image: str
    codec: str
    rate: float
    width: int
    height: int
    bytes: int
    bpp: float | None
    psnr: float | None
    psnr_float: float | None
    ms_ssim: float | None
    ms_ssim_resized: bool
    lpips: float | None
    lpips_paper: float | None
    encode_ms: float | None
    decode_ms: float | None
    #: index of the caption used (``each`` / ``best-of``), else None
    caption: int | None = None

    @property
    def rate_key(self) -> str:
        """The rate as the CSV writes it (`format_rate`): the key of summary points."""
        return format_rate(self.rate)

    def cells(self, columns: Sequence[str] = CSV_COLUMNS) -> list[str]:
        """The CSV cells of ``columns``."""
        return [format_cell(c, getattr(self, c)) for c in columns]

    @classmethod
    def from_cells(cls, cells: Mapping[str, str]) -> Row:
        """A row from its CSV cells (``caption`` optional); a bad cell raises ValueError."""
        values = {c: parse_cell(c, cells[c]) for c in CSV_COLUMNS}
        values[CAPTION_COLUMN] = parse_cell(CAPTION_COLUMN, cells.get(CAPTION_COLUMN, ""))
        return cls(**values)


def format_cell(column: str, value: Any) -> str:
    """The CSV text of ``value`` in ``column``."""
    if column in DIGITS:
        if value is None or math.isnan(value):
            return ""
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.{DIGITS[column]}f}"
    if column == "rate":
        return format_rate(value)
    if column == "ms_ssim_resized":
        return "1" if value else "0"
    if column == CAPTION_COLUMN:
        return "" if value is None else str(value)
    return str(value)


def parse_cell(column: str, text: str) -> Any:
    """The value of a CSV cell of ``column`` (the inverse of `format_cell`)."""
    if column in DIGITS:
        return float(text) if text != "" else None
    if column == "rate":
        return float(text)
    if column in _INTS:
        return int(text)
    if column == "ms_ssim_resized":
        return text == "1"
    if column == CAPTION_COLUMN:
        return int(text) if text != "" else None
    return text


def stored(column: str, value: float | None) -> float | None:
    """``value`` as its ``column`` cell reads back (rounded to the column's decimals; NaN → None)."""
    return parse_cell(column, format_cell(column, value))


def row_key(row: Row, caption_mode: str = "given") -> tuple[str, ...]:
    """Identity of a row: (image, codec, rate), + the caption index under ``each``."""
    if caption_mode == "each":
        return row.image, row.codec, row.rate_key, format_cell(CAPTION_COLUMN, row.caption)
    return row.image, row.codec, row.rate_key


def read_rows(path: Path, columns: Sequence[str] = CSV_COLUMNS) -> list[Row]:
    """Rows of an existing results CSV ([] if absent); a foreign header raises `TacoError`.

    A last line cut short by an interrupted run (no final newline) is removed from the file,
    so that appending continues on a fresh line; rows with missing cells are ignored.
    ``columns`` is the header expected (`csv_columns` of the caption policy).
    """
    if not path.exists():
        return []
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        cut = raw.rfind(b"\n") + 1
        with open(path, "r+b") as fh:
            fh.truncate(cut)
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None:
            return []
        if tuple(reader.fieldnames) != tuple(columns):
            raise TacoError(f"{path} has other columns than this version writes; use another --out")
        rows = []
        for cells in reader:
            if any(cells.get(c) is None for c in columns):
                continue
            try:
                rows.append(Row.from_cells(cells))
            except ValueError as exc:
                raise TacoError(f"{path}, line {reader.line_num}: {exc}") from exc
        return rows


def write_rows(path: Path, rows: Iterable[Row], columns: Sequence[str] = CSV_COLUMNS) -> None:
    """Rewrite a results CSV with exactly ``rows`` (header included)."""
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        writer.writerows(r.cells(columns) for r in rows)
    tmp.replace(path)


class RowAppender:
    """Appends rows to a results CSV, one flushed line each (the header first if the file is new)."""

    def __init__(self, path: Path, columns: Sequence[str]) -> None:
        self.columns = tuple(columns)
        new_file = not path.exists() or path.stat().st_size == 0
        self._fh: IO[str] = open(path, "a", newline="", encoding="utf-8")  # noqa: SIM115 (closed in close)
        self._writer = csv.writer(self._fh)
        if new_file:
            self._writer.writerow(self.columns)
            self._fh.flush()

    def append(self, row: Row) -> None:
        self._writer.writerow(row.cells(self.columns))
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> RowAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
