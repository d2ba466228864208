"""Hostile input images (tests/hostile.py) through every entrance of the demo.

Each kind either works (converted to 8-bit RGB, with a notice where the user should know) or
ends in one line of :class:`app.errors.TacoError`; nothing crashes, nothing prints a traceback,
and decompression bombs are refused before a single pixel is decoded.

Entrances: ``app.images.prepare_image``, the CLI (``app.cli.main``), the Python API
(``load_codec("elic-tiny", allow_random=True).compress``) and the Gradio handlers
(``app.ui.compare.load_image`` / ``run_compare`` with the tiny model set).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import hostile
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from app.errors import ImageInputError, TacoError
from app.images import DEFAULT_MAX_SIDE, MAX_PIXELS, prepare_image

CASES = hostile.corpus()
IDS = [c.kind for c in CASES]
#: Kinds the default suite also runs through the full UI comparison (all of them with -m slow).
UI_SAMPLE = {"png_rgba", "jpeg_cmyk", "png_1x1"}
#: Kinds whose .taco the default suite also decodes through the CLI / the API (same code path as
#: the fuzzed decoder; every kind with -m slow).
ROUND_TRIP_SAMPLE = {"png_1x1", "png_interlaced", "jpeg_cmyk", "tiff_float", "avif"}
#: Conversions the default suite also sends through `python -m app compress` (every kind with -m
#: slow; every refusal always): notes, exit codes and the CLI's own full-size refusals.
CLI_SAMPLE = ROUND_TRIP_SAMPLE | {"png_3x100000", "gif_animated", "jpeg_exif_rotated", "png_rgba"}


def _sampled(sample: set[str]) -> list:
    """Every refusal, the conversions in ``sample``, and the other conversions marked slow."""
    return [
        pytest.param(c, id=c.kind)
        if c.expect == "error" or c.kind in sample
        else pytest.param(c, id=c.kind, marks=pytest.mark.slow)
        for c in CASES
    ]
#: Known bug outside this file: app/metrics.py resizes for MS-SSIM to a 256-px *shorter* side, so
#: a 1x768 image (a 1 kB PNG of 3x100000 px after the UI downscale) becomes 256x196608 and
#: MS-SSIM asks for > 11 GB. Remove once metrics.ms_ssim bounds the long side.
METRICS_SKINNY_BUG: set[str] = set()  # fixed: MS-SSIM is n/a for slivers (app/metrics.py)
#: Address space a comparison may add (a memory bomb fails to allocate instead of eating the host).
UI_MEMORY_CAP = 3 << 30


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models run ~10x faster on one torch thread than on two contending ones."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny(one_thread: None) -> None:
    """The tiny random models, on one thread (their configs ship in app/configs)."""


def _write(tmp_path: Path, case: hostile.Case) -> Path:
    path = tmp_path / case.filename
    path.write_bytes(case.data())
    return path


def _assert_one_line(exc: BaseException, hint: str = "") -> None:
    msg = str(exc)
    assert isinstance(exc, TacoError), f"{type(exc).__name__}: {msg}"
    assert msg and "\n" not in msg and "Traceback" not in msg
    assert hint in msg, f"{hint!r} not in {msg!r}"


# ------------------------------------------------------------------------------- the corpus


def test_corpus_has_at_least_30_distinct_kinds() -> None:
    assert len(CASES) >= 30
    assert len(set(IDS)) == len(IDS)
    assert {c.expect for c in CASES} == {"ok", "error"}
    for case in CASES:
        assert isinstance(case.data(), bytes)
    assert max(len(c.data()) for c in CASES) < 1 << 20  # the corpus itself is small


# ------------------------------------------------------------------------------- prepare_image


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_prepare_image(case: hostile.Case, tmp_path: Path) -> None:
    """From a file named as a user would name it (the UI and `load_image` pass paths)."""
    path = _write(tmp_path, case)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about corrupt EXIF: fine, not a failure
        if case.expect == "error":
            with pytest.raises(ImageInputError) as info:
                prepare_image(path)
            _assert_one_line(info.value, case.hint)
            return
        arr, notices = prepare_image(path)
    assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3
    assert arr.shape[0] >= 1 and arr.shape[1] >= 1
    assert max(arr.shape[:2]) <= DEFAULT_MAX_SIDE
    assert arr.flags.c_contiguous
    assert all(isinstance(n, str) and "\n" not in n for n in notices)
    if case.hint:
        assert any(case.hint in n for n in notices), notices


BOMBS = [c for c in CASES if c.expect == "error" and c.hint == "MP"]


@pytest.mark.parametrize("case", BOMBS, ids=[c.kind for c in BOMBS])
def test_bombs_are_refused_without_decoding(case: hostile.Case, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the header is read: every `load` of every Pillow image class is booby-trapped."""

    def boom(self: object, *args: object, **kwargs: object) -> None:
        raise AssertionError(f"{type(self).__name__}.load() was called on a bomb")

    def subclasses(cls: type) -> Iterator[type]:
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    Image.init()
    for cls in [ImageFile.ImageFile, *subclasses(ImageFile.ImageFile)]:
        if "load" in vars(cls):
            monkeypatch.setattr(cls, "load", boom)
    assert len(case.data()) < 64 * 1024  # tiny file ...
    with pytest.raises(ImageInputError) as info:
        prepare_image(case.data())
    _assert_one_line(info.value, "MP")  # ... huge declared size, refused by the header check
    assert str(MAX_PIXELS // 1_000_000) in str(info.value)


def test_eps_never_reaches_ghostscript(monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    def no_subprocess(*args: object, **kwargs: object) -> None:
        raise AssertionError("a subprocess was started for an uploaded image")

    monkeypatch.setattr(subprocess, "Popen", no_subprocess)
    monkeypatch.setattr(subprocess, "check_call", no_subprocess)
    with pytest.raises(ImageInputError, match="not an image"):
        prepare_image(hostile.BY_KIND["eps_postscript"].data())


def test_pil_image_with_unconvertible_mode_is_one_line() -> None:
    with pytest.raises(ImageInputError) as info:
        prepare_image(Image.new("La", (4, 4)))
    _assert_one_line(info.value)


IMAGE_FUZZ = settings(
    max_examples=int(os.environ.get("IMAGE_FUZZ_EXAMPLES", "150")),
    deadline=None,  # a mutated size field may ask for up to the 64 MP cap: bounded, not fast
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SEEDS = hostile.sample_images()


@IMAGE_FUZZ
@given(
    seed=st.sampled_from(sorted(SEEDS)),
    edits=st.lists(st.tuples(st.integers(0, 1 << 16), st.binary(min_size=1, max_size=4)), min_size=1, max_size=6),
    cut=st.one_of(st.none(), st.integers(0, 1 << 16)),
)
def test_mutated_images_convert_or_fail_in_one_line(
    seed: str, edits: list[tuple[int, bytes]], cut: int | None
) -> None:
    """Byte edits / truncation of valid PNG, JPEG, GIF, WebP, BMP, TIFF, ICO files.

    Before the fix in app/images.py this found IndexError (GIF), TypeError (TIFF) and
    struct.error escaping from Pillow.
    """
    buf = bytearray(SEEDS[seed])
    for pos, chunk in edits:
        pos %= len(buf)
        buf[pos : pos + len(chunk)] = chunk
    if cut is not None:
        del buf[max(1, cut % len(buf)) :]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            arr, _ = prepare_image(bytes(buf))
        except ImageInputError as exc:
            _assert_one_line(exc)
            return
    assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3


# ------------------------------------------------------------------------------- the CLI


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from app.cli import main

    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def _check_cli_output(rc: int, out: str, err: str) -> None:
    assert rc in (0, 2), (rc, out, err)
    assert "Traceback" not in out + err
    lines = err.splitlines()
    assert err.count("\n") == len(lines)  # no stray carriage returns inside a line
    if rc == 2:  # conversion notes may come first; the error itself is one last line
        assert lines and lines[-1].startswith("error: "), err
        assert all(line.startswith("note: ") for line in lines[:-1]), err
    else:
        assert out.count("\n") == 1, out
        assert all(line.startswith("note: ") for line in lines), err


@pytest.mark.parametrize("case", _sampled(CLI_SAMPLE))
def test_cli_compress(
    case: hostile.Case, tmp_path: Path, capsys: pytest.CaptureFixture[str], one_thread: None
) -> None:
    src = _write(tmp_path, case)
    out_file = tmp_path / "out.taco"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc, out, err = _cli(
            ["compress", str(src), "-o", str(out_file), "--model", "elic-tiny", "--allow-random"], capsys
        )
    _check_cli_output(rc, out, err)
    if case.expect == "error":
        assert rc == 2 and case.hint in err
        assert not out_file.exists()
    elif rc == 2:  # the CLI works at full size: only the size bounds may refuse a good image
        assert "px" in err or "MP" in err, err
    elif case.kind in ROUND_TRIP_SAMPLE:
        rc, out, err = _cli(["decompress", str(out_file), "-o", str(tmp_path / "back.png")], capsys)
        _check_cli_output(rc, out, err)
        assert rc == 0


@pytest.mark.parametrize("name", hostile.hostile_filenames())
def test_cli_with_hostile_file_names(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Missing files, non-.taco files and unwritable outputs named with newlines, ANSI escapes,
    bidi overrides ...: still one line on stderr, exit 2."""
    missing = tmp_path / name
    rc, out, err = _cli(["info", str(missing)], capsys)
    _check_cli_output(rc, out, err)
    assert rc == 2
    not_taco = tmp_path / ("x" + name)
    not_taco.write_bytes(hostile.BY_KIND["png_1x1"].data())
    rc, out, err = _cli(["info", str(not_taco)], capsys)
    _check_cli_output(rc, out, err)
    assert rc == 2 and "not a .taco file" in err
    rc, out, err = _cli(["compress", str(not_taco), "-o", str(tmp_path / "nodir" / name)], capsys)
    _check_cli_output(rc, out, err)
    assert rc == 2


# ------------------------------------------------------------------------------- the Python API


@pytest.mark.parametrize("case", _sampled(ROUND_TRIP_SAMPLE))
def test_api_compress(case: hostile.Case, tiny: None, tiny_elic) -> None:
    """`LearnedCodec.compress(bytes)`: every refusal and a sample of round trips by default."""
    from app.codecs import decompress

    codec = tiny_elic
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            data = codec.compress(case.data())
        except TacoError as exc:
            _assert_one_line(exc)
            if case.expect == "error":
                assert case.hint in str(exc)
            else:  # full resolution: refused only by the size bounds
                assert "px" in str(exc) or "MP" in str(exc), exc
            return
    assert case.expect == "ok"
    img = decompress(data)
    arr, _ = prepare_image(case.data(), max_side=None)
    assert img.size == (arr.shape[1], arr.shape[0])


# ------------------------------------------------------------------------------- the UI handlers


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_handler_load_image(case: hostile.Case, tmp_path: Path) -> None:
    """`load_image` is what both the comparison and the upload notice call first."""
    from app.ui.compare import load_image
    from app.ui.defaults import max_side

    path = _write(tmp_path, case)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            arr, notices, name = load_image(str(path))
        except TacoError as exc:
            assert case.expect == "error", exc
            _assert_one_line(exc, case.hint)
            return
    assert case.expect == "ok"
    assert max(arr.shape[:2]) <= max_side() and arr.dtype == np.uint8
    assert name and "/" not in name and "\n" not in name


@contextlib.contextmanager
def address_space_cap(extra: int) -> Iterator[None]:
    """Temporarily cap this process's address space at its current size + ``extra`` bytes."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/status") as fh:
        vm = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))
    cap = vm + extra if hard == resource.RLIM_INFINITY else min(hard, vm + extra)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _compare(case: hostile.Case, tmp_path: Path) -> None:
    from app.ui.compare import run_compare
    from app.ui.model_sets import TINY_SET

    path = _write(tmp_path, case)
    with warnings.catch_warnings(), address_space_cap(UI_MEMORY_CAP):
        warnings.simplefilter("ignore")
        try:
            res = run_compare(str(path), "a hostile test image", 50, model_set=TINY_SET, use_cache=False)
        except TacoError as exc:
            assert case.expect == "error", exc
            _assert_one_line(exc, case.hint)
            return
    assert case.expect == "ok"
    assert not [n for n in res.notes if "allocate" in n], res.notes  # a metric blew the cap
    assert [r.row_id for r in res.runs][:2] == ["taco", "elic"]
    for run in res.runs:
        assert run.recon.shape == res.image.shape and run.n_bytes > 0
    if case.hint:
        assert any(case.hint in n for n in res.notices), res.notices
    assert res.random_weights


DEFAULT_UI = [c for c in CASES if c.expect == "error" or c.kind in UI_SAMPLE]


@pytest.mark.parametrize("case", DEFAULT_UI, ids=[c.kind for c in DEFAULT_UI])
def test_handler_compare(case: hostile.Case, tmp_path: Path, tiny: None) -> None:
    """The main compare handler with the tiny models: every refusal, and a sample of conversions."""
    _compare(case, tmp_path)


REST_UI = [
    pytest.param(
        c,
        id=c.kind,
        marks=pytest.mark.xfail(reason="app/metrics.py MS-SSIM resize of a 1x768 image needs > 11 GB"),
    )
    if c.kind in METRICS_SKINNY_BUG
    else pytest.param(c, id=c.kind)
    for c in CASES
    if c not in DEFAULT_UI
]


@pytest.mark.slow
@pytest.mark.parametrize("case", REST_UI)
def test_handler_compare_rest_of_corpus(case: hostile.Case, tmp_path: Path, tiny: None) -> None:
    _compare(case, tmp_path)
