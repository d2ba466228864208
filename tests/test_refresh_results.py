"""scripts/refresh_results.py: seeding classical rows and the caption-effect table."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from app.eval.schema import CSV_COLUMNS, Row, read_rows, write_rows

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def refresh():
    spec = importlib.util.spec_from_file_location("refresh_results", ROOT / "scripts" / "refresh_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(image, codec, rate, bpp, psnr, lpips):
    row = dict.fromkeys(CSV_COLUMNS, "0")
    row.update(image=image, codec=codec, rate=rate, bpp=str(bpp), psnr=str(psnr), lpips=str(lpips))
    return Row.from_cells(row)


def test_seed_keeps_only_classical_rows_and_never_overwrites(tmp_path, refresh):
    src = tmp_path / "old.csv"
    write_rows(src, [_row("a.png", "jpeg", "50", 1, 30, 0.2), _row("a.png", "taco", "0.01", 1, 30, 0.2),
                              _row("a.png", "avif", "40", 1, 30, 0.2)])
    out = tmp_path / "out"
    assert refresh.seed(out, src, refresh.CLASSICAL) == 2
    assert [r.codec for r in read_rows(out / "results.csv")] == ["jpeg", "avif"]
    assert refresh.seed(out, src, refresh.CLASSICAL) == 0  # an existing run is left alone


def test_caption_table_deltas(tmp_path, refresh):
    dirs = {}
    values = {"given": (0.5, 30.0, 0.20), "empty": (0.505, 29.9, 0.21), "other": (0.5, 30.0, 0.20)}
    for mode, (bpp, psnr, lp) in values.items():
        d = tmp_path / mode
        d.mkdir()
        write_rows(d / "results.csv", [_row(f"{i}.png", "taco", "0.01", bpp, psnr, lp) for i in range(3)]
                            + [_row("0.png", "jpeg", "50", 9, 9, 9)]
                            + ([_row("9.png", "taco", "0.01", 5, 50, 0.9)] if mode == "given" else []))
        dirs[mode] = d
    table = refresh.caption_table(dirs, ["0.01"]).splitlines()
    assert table[2] == "| 0.01 | correct | 0.5000 | 30.000 | 0.2000 | — | — | — |"
    assert table[3] == "| 0.01 | empty | 0.5050 | 29.900 | 0.2100 | +1.00 % | -0.100 | +5.00 % |"
    assert table[4].endswith("| +0.00 % | +0.000 | +0.00 % |")
