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
from app.models import exact as exact_module
from app.models.exact import (
    ACT_SHIFT,
    NARROW,
    CheckerboardContext,
    ExactConv,
    ExactEntropyModel,
    pow2,
    quantise,
)
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


def test_every_exact_arithmetic_decodes_and_they_agree() -> None:
    """Default files carry the narrow and half-grid flags; wide half-grid and wide full-grid files
    (earlier builds) still decode, and the arithmetics give nearly the same file and picture
    (they differ only in weight and activation steps)."""
    img = np.asarray(__import__("PIL.Image").Image.open(ROOT / "assets" / "coffee.png").convert("RGB"))
    img = img[:128, :192]
    out = {}
    flags = {"portable": 0x07, "portable-wide": 0x03, "portable-full": 0x01}
    for coding, flag in flags.items():
        codec = load_codec("elic", coding=coding)
        data = codec.compress(img, lmbda=0.01)
        assert data[5] == flag
        assert bitstream.read_header(data).coding == coding
        out[coding] = (len(data), np.asarray(codec.decompress(data)).astype(np.int16))
    def psnr(rec: np.ndarray) -> float:
        return float(10 * np.log10(255**2 / np.mean((rec - img.astype(np.int16)) ** 2.0)))

    n_ref, rec_ref = out["portable-full"]
    for coding in ("portable", "portable-wide"):
        n, rec = out[coding]
        # other means flip a few roundings of y - mu; each moves its neighbourhood a little
        assert abs(n - n_ref) <= 0.01 * n_ref + 8
        assert abs(psnr(rec) - psnr(rec_ref)) < 0.1


# --------------------------------------------------------------------------- narrow arithmetic

NARROW_LAYERS = {
    "5x5": lambda: torch.nn.Conv2d(96, 64, 5, padding=2),
    "5x5-small": lambda: torch.nn.Conv2d(8, 16, 5, padding=2),
    "3x3": lambda: torch.nn.Conv2d(192, 64, 3, padding=1),
    "deconv-s2": lambda: torch.nn.ConvTranspose2d(64, 96, 5, 2, 2, 1),
    "deconv-s1": lambda: torch.nn.ConvTranspose2d(96, 64, 3, 1, 1),
    "1x1": lambda: torch.nn.Conv2d(320, 64, 1),
}


def _l1_bound_holds(conv: ExactConv) -> bool:
    w = conv.weight.double()
    out_dim = 1 if conv.transposed else 0
    l1 = int(w.abs().sum(dim=tuple(d for d in range(4) if d != out_dim)).max())
    if conv.limbs == 1:
        return l1 * 2**conv.act_shift <= 2**24
    if conv.limbs == 2:  # |hi| <= 2^(T-s) <= 2^s and 0 <= lo < 2^s
        return (conv.act_shift <= 2 * conv.limb_shift and l1 * 2**conv.limb_shift <= 2**24)
    return l1 * 2**conv.act_shift < 2**53


@pytest.mark.parametrize("kind", sorted(NARROW_LAYERS))
def test_narrow_float32_limbs_give_the_float64_sums(kind: str, monkeypatch) -> None:
    """Random inputs and inputs at the bound (every activation at ±2^T with the signs of the
    largest-L1 channel's weights): the float32-limb evaluation equals the float64 one bit for bit,
    and the bound it relies on holds."""
    torch.manual_seed(3)
    layer = NARROW_LAYERS[kind]()
    conv = ExactConv(layer, torch.device("cpu"), NARROW)
    assert conv.act_shift >= 9 and _l1_bound_holds(conv)
    assert (conv.weight32 is None) == (conv.kernel == (1, 1))
    cin = layer.in_channels
    xs = [torch.randn(2, cin, 9, 11, dtype=torch.float64) * 3,
          torch.relu(torch.randn(1, cin, 6, 4, dtype=torch.float64))]
    if not conv.transposed:  # one output position sees the whole kernel at the extreme
        w = conv.weight.double()
        o = int(w.abs().sum(dim=(1, 2, 3)).argmax())
        kh, kw = conv.kernel
        x = torch.zeros(2, cin, kh, kw, dtype=torch.float64)
        x[0] = torch.sign(w[o]) * (1 - 2.0**-30)  # rounds to ±2^T
        x[1] = -x[0]
        xs.append(x)
    fast = [conv(x) for x in xs]
    monkeypatch.setattr(exact_module, "float32_exact", lambda device: False)
    slow = [conv(x) for x in xs]
    for f, s_ in zip(fast, slow, strict=True):
        assert torch.equal(f, s_)
    with torch.no_grad():
        ref = layer(xs[0].float()).double()
    # a sanity check only: random uniform weights get the fewest weight bits (63)
    assert float((fast[0] - ref).abs().max()) < 2e-2 * float(ref.abs().max())


def test_narrow_bound_holds_for_every_layer_of_every_model() -> None:
    """Embedded TACO and ELIC and the official-size configs (random weights)."""
    models = [load_codec(n)._model(load_codec(n)._variants[0]) for n in ("elic", "taco")]
    models += [create_model(a) for a in ("elic-official", "taco-official")]
    for model in models:
        em = ExactEntropyModel(model, True, NARROW)
        convs = [s for seq in [em.h_s, *em.entropy_anchor, *em.entropy_nonanchor,
                               *[c for c in em.channel_context if c is not None]]
                 for s in seq.steps if s is not None]
        convs += [c.conv for c in em.checkerboard]
        assert convs and all(_l1_bound_holds(c) and c.act_shift >= 9 for c in convs)
        assert sum(c.weight32 is not None for c in convs) >= 4  # the spatial convs use limbs


def test_files_do_not_depend_on_how_the_exact_sums_are_taken(monkeypatch) -> None:
    """A machine whose float32 convs are not trusted (GPU, reduced precision, failed probe) takes
    the sums in float64: the same file, byte for byte, and it decodes files made with limbs."""
    img = np.asarray(__import__("PIL.Image").Image.open(ROOT / "assets" / "coffee.png").convert("RGB"))
    img = img[:96, :128]
    codec = load_codec("taco")
    fast = codec.compress(img, caption="a cup of coffee", lmbda=0.01)
    monkeypatch.setattr(exact_module, "float32_exact", lambda device: False)
    slow = codec.compress(img, caption="a cup of coffee", lmbda=0.01)
    assert fast == slow
    codec.decompress(fast)  # raises if the symbols differ


def test_float32_is_not_trusted_where_it_may_round(monkeypatch) -> None:
    cpu = torch.device("cpu")
    assert exact_module.float32_exact(torch.device("cuda")) is False
    monkeypatch.setattr(exact_module, "_reduced_float32", lambda: True)
    assert exact_module.float32_exact(cpu) is False


def test_float32_probe_passes_here_under_every_isa_cap() -> None:
    """oneDNN's direct float32 kernels add integer products exactly at every instruction set
    this suite is run under (the suite also runs with ONEDNN_MAX_CPU_ISA=SSE41 and =AVX2)."""
    assert exact_module._float32_probe() is True


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
