"""Golden files: `.taco` files written by an earlier build still decode, exactly.

The files in tests/data/golden were written by earlier builds (scripts/golden_files.py, with the
stored test-only elic-tiny weights): ``elic-tiny-*`` by the one that introduced portable `.taco`
version 2 (full-grid arithmetic, flags 0x01), ``elic-tiny-halfgrid-*`` by the one that made the
half-grid arithmetic the default (flags 0x03), ``elic-tiny-narrow-*`` by the one that made the
narrow arithmetic (float32 limbs) the default (flags 0x07). Decoding them
must pass the files' own symbols check (the entropy decoding is bit-exact) and give the recorded
reconstruction to within one 8-bit level (the synthesis transform is float). A failure here means
files users hold no longer decode: keep the old arithmetic for them or bump the `.taco` version
with a clear message, never regenerate the files to make this pass.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app import bitstream
from app.codecs import load_codec

GOLDEN = Path(__file__).resolve().parent / "data" / "golden"


GENERATIONS = [("elic-tiny", "portable-full"), ("elic-tiny-halfgrid", "portable-wide"),
               ("elic-tiny-narrow", "portable")]


@pytest.mark.parametrize("tag", ["low", "high"])
@pytest.mark.parametrize(("stem", "coding"), GENERATIONS)
def test_golden_portable_file_decodes_to_its_recorded_image(stem: str, coding: str, tag: str
                                                             ) -> None:
    data = (GOLDEN / f"{stem}-{tag}.taco").read_bytes()
    header = bitstream.read_header(data)
    assert (header.version, header.coding, header.model_id) == (2, coding, "elic-tiny")
    codec = load_codec("elic-tiny", checkpoint=GOLDEN / "elic-tiny.safetensors")
    assert codec.fingerprint(header.lmbda) == header.fingerprint
    rec = np.asarray(codec.decompress(data)).astype(np.int16)  # raises if the symbols differ
    ref = np.asarray(Image.open(GOLDEN / f"{stem}-{tag}.png").convert("RGB")).astype(np.int16)
    assert rec.shape == ref.shape == (48, 80, 3)
    diff = np.abs(rec - ref)
    assert diff.max() <= 1 and (diff > 0).mean() <= 0.01
