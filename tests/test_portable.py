"""The portable coding path: exact arithmetic, self-checking files, and a cross-machine matrix.

Other CPUs are simulated with oneDNN's instruction-set cap (``ONEDNN_MAX_CPU_ISA`` = SSE41, AVX,
AVX2, or none) in separate processes, and with 1 / 2 / 4 threads: every file encoded under any
setting must decode under every setting without desynchronisation (the file's symbols check), to
within one 8-bit level on at most 1 % of the pixels of the encoder's own reconstruction.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from app import bitstream
from app.codecs import decode_notes, load_codec
from app.errors import BitstreamError
from app.models import create_model
from app.models.exact import ACT_SHIFT, CheckerboardContext, ExactConv, pow2, quantise
from app.models.layers import ANCHOR, NONANCHOR, squeeze_half, unsqueeze_half
from app.models.tables import portable_scale_table

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "portable_worker.py"
#: (label, ONEDNN_MAX_CPU_ISA value or None for the machine's best)
ISAS = [("default", None), ("SSE41", "SSE41"), ("AVX", "AVX"), ("AVX2", "AVX2")]
#: Encoder settings: (label, ISA, threads). Each file is decoded under every ISA at 1, 2, 4 threads.
ENCODERS = [("default", None, 2), ("SSE41", "SSE41", 1)]


# --------------------------------------------------------------------------- exact arithmetic


def test_pow2_is_exact() -> None:
    k = torch.arange(-1022, 1024)
    assert torch.equal(pow2(k), torch.tensor([2.0**int(i) for i in k], dtype=torch.float64))


def test_quantise_is_24_bit_and_per_sample() -> None:
    x = torch.randn(3, 4, 5, 6, dtype=torch.float64) * torch.tensor([1e-3, 1.0, 1e4]).view(3, 1, 1, 1)
    a, e = quantise(x)
    assert torch.equal(a, a.round()) and int(a.abs().max()) <= 2**ACT_SHIFT
    back = a * pow2(e - ACT_SHIFT).view(-1, 1, 1, 1)
    for b in range(3):  # relative error below 2^-23 of each sample's own peak
        assert float((back[b] - x[b]).abs().max()) <= float(x[b].abs().max()) * 2.0**-23
    with pytest.raises(FloatingPointError):
        quantise(torch.tensor([[float("nan")]], dtype=torch.float64))


@pytest.mark.parametrize("transposed", [False, True])
def test_exact_conv_is_close_to_float_and_independent_of_threads(transposed: bool) -> None:
    torch.manual_seed(0)
    layer = (torch.nn.ConvTranspose2d(24, 16, 5, 2, 2, 1) if transposed
             else torch.nn.Conv2d(24, 16, 5, 1, 2))
    x = torch.randn(2, 24, 9, 11)
    exact = ExactConv(layer, torch.device("cpu"))
    before = torch.get_num_threads()
    try:
        outs = []
        for t in (1, 2, 4):
            torch.set_num_threads(t)
            outs.append(exact(x.double()))
        channels_last = exact(x.double().contiguous(memory_format=torch.channels_last))
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(outs[0], o) for o in outs[1:])
    assert torch.equal(outs[0], channels_last)
    with torch.no_grad():
        ref = layer(x).double()
    assert float((outs[0] - ref).abs().max()) < 1e-3 * float(ref.abs().max())


def test_stride_1_transposed_conv_runs_as_the_same_integer_sums() -> None:
    """The stride-1 transposed conv is evaluated as a regular conv: bit-identical to the direct
    transposed computation on the same integers."""
    torch.manual_seed(0)
    layer = torch.nn.ConvTranspose2d(24, 16, 3, 1, 1)
    exact = ExactConv(layer, torch.device("cpu"))
    assert not exact.transposed  # converted
    x = torch.randn(2, 24, 9, 11, dtype=torch.float64)
    a, e = quantise(x)
    w = layer.weight.detach().double()
    step = w.abs().amax(dim=(0, 2, 3)) / 32767
    w_int = torch.round(w / step.view(1, -1, 1, 1))
    acc = torch.nn.functional.conv_transpose2d(a, w_int, None, 1, 1)
    ref = acc * (step.view(1, -1, 1, 1) * pow2(e - ACT_SHIFT).view(-1, 1, 1, 1))
    ref = ref + layer.bias.detach().double().view(1, -1, 1, 1)
    assert torch.equal(exact(x), ref)


@pytest.mark.parametrize("size", [(32, 48), (7, 10), (1, 2), (2, 4)])
def test_checkerboard_context_is_the_full_exact_conv_at_the_non_anchors(size) -> None:
    """The half-grid checkerboard conv gives exactly the full exact conv's non-anchor outputs."""
    torch.manual_seed(1)
    layer = torch.nn.Conv2d(12, 20, 5, padding=2)
    full = ExactConv(layer, torch.device("cpu"))
    half = CheckerboardContext(layer, torch.device("cpu"))
    h, w = size
    x = unsqueeze_half(torch.randn(2, 12, h, w // 2, dtype=torch.float64) * 3, ANCHOR)
    assert torch.equal(half(x), squeeze_half(full(x), NONANCHOR))


def test_half_and_full_grid_files_both_decode_and_agree() -> None:
    """Default files carry the half-grid flag; full-grid files (earlier builds) still decode, and
    the two arithmetics give nearly the same file and picture (they differ only in activation
    steps)."""
    img = np.asarray(__import__("PIL.Image").Image.open(ROOT / "assets" / "coffee.png").convert("RGB"))
    img = img[:128, :192]
    out = {}
    for coding in ("portable", "portable-full"):
        codec = load_codec("elic", coding=coding)
        data = codec.compress(img, lmbda=0.01)
        flags = data[5]
        assert flags == {"portable": 0x03, "portable-full": 0x01}[coding]
        assert bitstream.read_header(data).coding == coding
        out[coding] = (len(data), np.asarray(codec.decompress(data)).astype(np.int16))
    (n_half, rec_half), (n_full, rec_full) = out["portable"], out["portable-full"]
    assert abs(n_half - n_full) <= 0.01 * n_full + 8
    assert np.abs(rec_half - rec_full).mean() < 0.5


def test_exact_conv_refuses_too_wide_layers() -> None:
    layer = torch.nn.Conv2d(8192, 1, 3)  # |w_int| L1 norm could reach 32767·73728 > 2^30
    with torch.no_grad():
        layer.weight.fill_(1.0)
    with pytest.raises(Exception, match="too wide"):
        ExactConv(layer, torch.device("cpu"))


def test_portable_scale_table_matches_compressai() -> None:
    from compressai.models.base import get_scale_table

    ours = portable_scale_table()
    theirs = get_scale_table().float()
    assert ours.shape == (64,) and ours[0] == pytest.approx(0.11) and ours[-1] == 256.0
    assert torch.allclose(ours, theirs, rtol=1e-6)


def test_portable_tables_do_not_depend_on_threads() -> None:
    model = create_model("elic-tiny")
    model.eval()
    model.update(force=True)
    crcs = set()
    before = torch.get_num_threads()
    try:
        for t in (1, 2, 4):
            torch.set_num_threads(t)
            model.update(force=True)  # drops the cached coder
            crcs.add(model.coder("portable")[1].crc)
    finally:
        torch.set_num_threads(before)
    assert len(crcs) == 1


# --------------------------------------------------------------------------- self-checking files


@pytest.fixture(scope="module")
def elic_file() -> tuple[object, bytes]:
    codec = load_codec("elic")
    img = np.asarray(__import__("PIL.Image").Image.open(ROOT / "assets" / "coffee.png").convert("RGB"))
    return codec, codec.compress(img[:128, :192], lmbda=0.01)


def test_default_files_are_portable_version_2(elic_file: tuple[object, bytes]) -> None:
    _, data = elic_file
    h = bitstream.read_header(data)
    assert (h.version, h.coding) == (2, "portable")
    assert h.tables_crc is not None and h.symbols_crc is not None
    assert decode_notes(h) == []


def _repack(data: bytes, **changes: object) -> bytes:
    header, strings = bitstream.unpack(data)
    return bitstream.pack(dataclasses.replace(header, **changes), strings)


def test_symbols_mismatch_is_refused_not_returned(elic_file: tuple[object, bytes]) -> None:
    codec, data = elic_file
    h = bitstream.read_header(data)
    forged = _repack(data, symbols_crc=h.symbols_crc ^ 1)
    with pytest.raises(BitstreamError, match="does not reproduce: the decoded latents differ"):
        codec.decompress(forged)


def test_tables_mismatch_is_refused_before_decoding(elic_file: tuple[object, bytes]) -> None:
    codec, data = elic_file
    h = bitstream.read_header(data)
    with pytest.raises(BitstreamError, match="coding tables this machine does not reproduce"):
        codec.decompress(_repack(data, tables_crc=h.tables_crc ^ 1))


def test_float_path_files_and_version_1_files_still_decode() -> None:
    codec = load_codec("elic", coding="float")
    img = np.asarray(__import__("PIL.Image").Image.open(ROOT / "assets" / "coffee.png").convert("RGB"))
    data = codec.compress(img[:64, :128], lmbda=0.01)
    h = bitstream.read_header(data)
    assert (h.version, h.coding) == (2, "float") and "float-path" in decode_notes(h)[0]
    rec = np.asarray(codec.decompress(data))
    v1 = _repack(data, version=1, tables_crc=None, symbols_crc=None)
    h1 = bitstream.read_header(v1)
    assert h1.version == 1 and h1.coding == "float" and "version-1" in decode_notes(h1)[0]
    assert np.array_equal(np.asarray(load_codec("elic").decompress(v1)), rec)


# --------------------------------------------------------------------------- the matrix


def _official_checkpoints(folder: Path) -> None:
    """Official-size TACO and ELIC with seeded random weights, as official-style checkpoints."""
    for name in ("taco-official", "elic-official"):
        torch.manual_seed(0)
        model = create_model(name)
        target = folder / "official" / name
        target.mkdir(parents=True)
        torch.save({"state_dict": model.state_dict()}, target / "lambda_0.0008.pth.tar")


def _run(folder: Path, isa: str | None, *args: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
    if isa:
        env["ONEDNN_MAX_CPU_ISA"] = isa
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.Popen([sys.executable, str(WORKER), args[0], str(folder), *args[1:]],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _run_all(jobs: list[tuple[str, str | None, list[str]]], folder: Path, parallel: int = 2) -> None:
    while jobs:
        batch, jobs = jobs[:parallel], jobs[parallel:]
        procs = [(what, _run(folder, isa, *args)) for what, isa, args in batch]
        for what, proc in procs:
            out, _ = proc.communicate(timeout=1200)
            assert proc.returncode == 0, f"{what} failed:\n{out.decode()[-3000:]}"


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("portable")
    _official_checkpoints(folder)
    _run_all([(f"encode under {label}", isa, ["encode", label, str(t)])
              for label, isa, t in ENCODERS], folder)
    _run_all([(f"decode under {label}", isa, ["decode", label]) for label, isa in ISAS], folder)
    return folder


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_every_file_decodes_the_same_under_every_isa_and_thread_count(matrix: Path) -> None:
    files = sorted(matrix.glob("*.taco"))
    cases = {f.stem.split("@")[0] for f in files}
    assert cases == {*(f"{m}-{lam:g}" for m in ("taco", "elic") for lam in (0.0018, 0.0093, 0.0483)),
                     "taco-official", "elic-official"}
    assert len(files) == len(cases) * len(ENCODERS)  # every encode setting
    tables: dict[str, set[int]] = {}
    checked = 0
    for label, _ in ISAS:
        report = json.loads((matrix / f"report-{label}.json").read_text())
        for name, crc in report["tables"].items():
            tables.setdefault(name, set()).add(crc)
        for key, result in report["files"].items():
            assert "error" not in result, f"{key}: {result.get('error')}"
            assert result["max_diff"] <= 1 and result["frac_diff"] <= 0.01, (key, result)
            checked += 1
    assert checked == len(files) * len(ISAS) * 3  # every (encode, decode) setting pair
    assert all(len(crcs) == 1 for crcs in tables.values()), tables  # same tables everywhere


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_cli_and_ui_decode_a_file_made_under_another_isa(matrix: Path, tmp_path: Path) -> None:
    from app.cli import main
    from app.ui.decode_tab import decode_bitstream

    made = matrix / "elic-0.0093@SSE41-t1.taco"
    reference = np.load(made.with_suffix(".npy"))
    out = tmp_path / "out.png"
    assert main(["decompress", str(made), "-o", str(out)]) == 0
    got = np.asarray(__import__("PIL.Image").Image.open(out))
    assert np.abs(got.astype(int) - reference.astype(int)).max() <= 1
    arr, info = decode_bitstream(str(made))
    assert np.abs(arr.astype(int) - reference.astype(int)).max() <= 1
    assert "portable" in info
