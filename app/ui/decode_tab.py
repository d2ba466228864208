"""Decoding an uploaded `.taco` file (in a separate process: it comes from a stranger)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from app.display import MISSING
from app.errors import BitstreamError
from app.settings import get_settings
from app.ui.backend import Backend, default_backend
from app.ui.compare import safe_stem
from app.ui.runs import to_uint8

if TYPE_CHECKING:  # pragma: no cover

    from app.bitstream import Header

log = logging.getLogger(__name__)


MAX_UPLOAD_BYTES = 64 * 1024 * 1024
# The decode tab reconstructs at most ``TACO_UI_MAX_DECODE_PIXELS`` pixels. A 193-byte file may
# claim any size up to the codec's own bound (``TACO_MAX_PIXELS``, 4.2 MP), which costs ~1 min of
# CPU on the official architecture while the queue (concurrency 1) waits; the demo itself writes at
# most TACO_UI_MAX_SIDE² pixels, so the default bound is twice that. ``python -m app decompress``
# has no such limit beyond the codec's.



def decode_bitstream(file: Any, backend: Backend | None = None) -> tuple[np.ndarray, str]:
    """Decode a `.taco` file with the model its header names. No caption is involved."""
    backend = backend or default_backend()
    if file is None:
        raise BitstreamError("no file: upload a .taco file")
    if isinstance(file, bytes | bytearray):
        data = bytes(file)
        fname = "upload.taco"
    else:
        path = Path(file["path"] if isinstance(file, Mapping) else str(file))
        fname = path.name
        try:
            size = path.stat().st_size
        except OSError:
            raise BitstreamError(f"cannot read {fname}") from None
        if size > MAX_UPLOAD_BYTES:
            raise BitstreamError(f"{fname} is larger than {MAX_UPLOAD_BYTES >> 20} MB")
        data = path.read_bytes()
    header = backend.read_header(data)
    h, w = int(header.height), int(header.width)
    limit = get_settings().ui_max_decode_pixels
    if h * w > limit:  # a forged header must not buy work: refuse before any model runs
        raise BitstreamError(
            f"{safe_stem(Path(fname).stem)} holds a {w}×{h} image; this demo decodes up to "
            f"{limit / 1e6:.1f} MP — use `python -m app decompress` for bigger files"
        )
    t0 = time.perf_counter()
    # a stranger's file: a backend that can decode in a separate process does (app.sandbox)
    img = backend.decompress_untrusted(data)
    ms = (time.perf_counter() - t0) * 1e3
    arr = to_uint8(img)
    lam = header.lmbda
    lam_text = MISSING if lam is None or not math.isfinite(lam) else f"{lam:.4g}"
    fp = header.fingerprint
    info = "\n".join(
        [
            "**Decoded without any caption**: the file holds no text and the decoder takes none, "
            "which is TACO's point: the caption helps the encoder only and costs 0 bits.",
            "",
            "| Field | Value |",
            "|---|---|",
            f"| File | `{safe_stem(Path(fname).stem)}` |",
            f"| Model (from the header) | `{header.model_id}` |",
            f"| Weights fingerprint | `{fp.hex()}` |",
            f"| λ | {lam_text} |",
            f"| Size | {w} × {h} px |",
            f"| File size | {len(data):,} bytes = {8 * len(data) / (h * w):.4f} bpp |",
            f"| Coding | {_coding_text(header)} |",
            f"| Decode time | {ms:.0f} ms |",
        ]
    )
    return arr, info


def _coding_text(header: Header) -> str:
    """How the file was coded, and what that means for decoding elsewhere."""
    if header.version == 1:
        return ("version 1, float entropy model, no symbols check (decodes correctly only on a "
                "CPU with the encoder's float kernels)")
    if header.coding == "float":
        return ("version 2, float (official arithmetic): checked — decodes exactly or is refused "
                "where the float kernels differ")
    grid = {"portable-full": " (wide, full-grid, as earlier builds wrote it)",
            "portable-wide": " (wide, as earlier builds wrote it)"}.get(header.coding, "")
    return (f"version 2, portable{grid} (exact integer entropy model): decodes the same on every "
            "machine")
