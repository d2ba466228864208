"""The run's logs: rank-0 text log (stdout + ``train.log``) and the ``log.csv`` / ``eval.csv`` tables."""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


class RunLog:
    """Rank-0 text log (stdout + ``train.log``) and CSV writers; silent on other ranks."""

    def __init__(self, out: Path | None, active: bool) -> None:
        self.out, self.active = out, active
        self._fh = open(out / "train.log", "a", encoding="utf-8") if active and out else None

    def __call__(self, msg: str) -> None:
        if not self.active:
            return
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        if self._fh:
            self._fh.write(line + "\n")
            self._fh.flush()

    def csv(self, name: str, row: Mapping[str, Any], fields: Sequence[str]) -> None:
        if not self.active or self.out is None:
            return
        path = self.out / name
        new = not path.exists()
        with open(path, "a", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(fields), extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow({k: _fmt(row.get(k)) for k in fields})

    def close(self) -> None:
        if self._fh:
            self._fh.close()


def truncate_csv(path: Path, max_step: int) -> None:
    """Keep only the rows of a log CSV whose ``step`` is <= ``max_step`` (used on resume)."""
    if not path.is_file():
        return
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows or "step" not in rows[0]:
        return
    col = rows[0].index("step")
    keep = [rows[0]] + [r for r in rows[1:] if r and int(float(r[col])) <= max_step]
    if len(keep) != len(rows):
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows(keep)
        os.replace(tmp, path)


def _fmt(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


LOG_FIELDS = ["step", "lmbda", "loss", "bpp", "mse", "psnr", "lpips", "joint", "aux",
              "grad_norm", "lr", "s_per_step", "wall_s"]
EVAL_FIELDS = ["step", "lmbda", "image", "bytes", "bpp", "psnr", "lpips", "enc_s", "dec_s"]
