"""Evaluation runner (CSV / JSON / plots / BD-rate) and the benchmark."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from fakes import JpegLearned
from PIL import Image
from scipy import integrate, interpolate

import app.codecs
from app import bench
from app.errors import ConfigError, TacoError
from app.eval import bdrate, cli, rates, report, runner, schema
from app.eval import io as eval_io

# --------------------------------------------------------------------------- BD-rate


R = [0.2, 0.4, 0.8, 1.6, 3.2]
Q = [28.0, 31.0, 34.0, 37.0, 40.0]


@pytest.mark.parametrize("method", ["pchip", "cubic"])
def test_bd_rate_known_answers(method):
    assert bdrate.bd_rate(R, Q, R, Q, method) == pytest.approx(0.0, abs=1e-9)
    assert bdrate.bd_rate(R, Q, [r * 0.8 for r in R], Q, method) == pytest.approx(-20.0, abs=1e-6)
    assert bdrate.bd_rate(R, Q, [r * 1.5 for r in R], Q, method) == pytest.approx(50.0, abs=1e-6)
    # order of points does not matter
    assert bdrate.bd_rate(R[::-1], Q[::-1], [r * 0.8 for r in R], Q, method) == pytest.approx(-20.0)


def test_bd_rate_no_overlap_or_too_few_points():
    assert bdrate.bd_rate(R, Q, R, [q + 100 for q in Q]) is None
    assert bdrate.bd_rate(R[:3], Q[:3], R[:3], Q[:3], "cubic") is None  # cubic needs 4
    assert bdrate.bd_rate(R[:2], Q[:2], R[:2], Q[:2], "pchip") == pytest.approx(0.0)
    with pytest.raises(ConfigError):
        bdrate.bd_rate(R, Q, R, Q, "linear")  # type: ignore[arg-type]


def test_bd_rate_lpips_sign_convention():
    """Lower LPIPS at the same rate must give a negative BD-rate (quality = −LPIPS)."""
    summary = {
        "a": [{"rate": str(i), "bpp": r, "psnr": q, "ms_ssim": 0.9, "lpips": 0.5 - 0.05 * i}
              for i, (r, q) in enumerate(zip(R, Q, strict=True))],
        "b": [{"rate": str(i), "bpp": r, "psnr": q - 1, "ms_ssim": 0.9, "lpips": 0.45 - 0.05 * i}
              for i, (r, q) in enumerate(zip(R, Q, strict=True))],
    }
    bd = bdrate.bd_rates(summary, "a")
    assert bd["lpips"]["b"] < 0 < bd["psnr"]["b"]
    assert bd["ms_ssim"]["b"] is None  # constant quality: no interval


# Fixed curves -> BD-rate (%) for (pchip, cubic). The literals were produced by the former
# hand-written PCHIP of the evaluation; `test_bd_rate_golden_table_is_the_integral` re-derives
# them by adaptive quadrature. The kodak_* curves are the Kodak-24 means (docs/results/kodak),
# rounded and frozen here so a refresh of the results does not move the table.
BD_CURVES = {
    "shifted": ([0.2, 0.4, 0.8, 1.6, 3.2], [28.0, 31.0, 34.0, 37.0, 40.0],
                [0.25, 0.5, 0.9, 1.7, 3.0], [28.5, 31.7, 34.1, 36.2, 39.0]),
    "non_uniform": ([0.1, 0.3, 0.5, 0.9, 1.4], [25.0, 29.0, 29.5, 33.0, 35.0],
                    [0.12, 0.2, 0.6, 1.0], [26.0, 28.0, 31.0, 34.0]),
    "partial_overlap": ([0.2, 0.4, 0.8, 1.6, 3.2], [28.0, 31.0, 34.0, 37.0, 40.0],
                        [0.5, 0.9, 2.0, 4.0, 6.0], [33.0, 35.0, 38.0, 41.0, 43.0]),
    "three_points": ([0.2, 0.4, 0.8], [28.0, 31.0, 34.0], [0.25, 0.35, 0.9], [28.2, 30.5, 33.0]),
    "kodak_taco_vs_elic_psnr": ([0.19, 0.3506, 0.5398, 0.7973], [27.634, 29.984, 31.47, 32.339],
                                [0.216, 0.3944, 0.5948, 0.8659], [27.991, 30.337, 31.73, 32.537]),
    "kodak_elic_vs_jpeg_psnr": ([0.2212, 0.3266, 0.5083, 0.7286, 0.9055, 1.3676],
                                [23.852, 26.672, 29.145, 31.013, 32.174, 34.522],
                                [0.19, 0.3506, 0.5398, 0.7973], [27.634, 29.984, 31.47, 32.339]),
    "kodak_taco_vs_elic_neg_lpips": (
        [0.19, 0.3506, 0.5398, 0.7973], [-0.3145, -0.1916, -0.1277, -0.0997],
        [0.216, 0.3944, 0.5948, 0.8659], [-0.2225, -0.1111, -0.064, -0.0445]),
}
BD_GOLDEN = {  # name -> (pchip, cubic)
    "shifted": (14.491798017982793, 13.509445315017299),
    "non_uniform": (-5.01359127635509, -11.440782362589076),
    "partial_overlap": (-6.878774536998122, -6.863723011061151),
    "three_points": (7.992960314699893, None),  # cubic needs 4 points
    "kodak_taco_vs_elic_psnr": (1.7979769123499079, 2.152583171647371),
    "kodak_elic_vs_jpeg_psnr": (-40.051297795408594, -39.277434448352),
    "kodak_taco_vs_elic_neg_lpips": (-33.16954093145624, -23.0794361325662),
}


@pytest.mark.parametrize("name", sorted(BD_CURVES))
def test_bd_rate_golden_table(name):
    for method, want in zip(("pchip", "cubic"), BD_GOLDEN[name], strict=True):
        got = bdrate.bd_rate(*BD_CURVES[name], method)
        if want is None:
            assert got is None
        else:
            assert got == pytest.approx(want, rel=1e-9, abs=1e-12)


def _bd_rate_by_quadrature(ar, aq, tr, tq, method):
    """Textbook BD-rate: mean of log-rate(test) − log-rate(anchor) over the common quality range,
    the mean taken by adaptive quadrature (not by the interpolant's closed-form integral)."""
    def fit(rates, quality):
        order = np.argsort(quality)
        q, lr = np.asarray(quality)[order], np.log(np.asarray(rates)[order])
        if method == "pchip":
            return q, interpolate.PchipInterpolator(q, lr)
        return q, np.poly1d(np.polyfit(q, lr, 3))

    (qa, fa), (qt, ft) = fit(ar, aq), fit(tr, tq)
    lo, hi = max(qa[0], qt[0]), min(qa[-1], qt[-1])
    knots = [x for x in sorted({*qa, *qt}) if lo < x < hi] or None
    diff, _ = integrate.quad(lambda q: float(ft(q) - fa(q)), lo, hi, points=knots,
                             epsabs=0.0, epsrel=1e-13, limit=200)
    return (math.exp(diff / (hi - lo)) - 1.0) * 100.0


@pytest.mark.parametrize("name", sorted(BD_CURVES))
def test_bd_rate_golden_table_is_the_integral(name):
    for method, want in zip(("pchip", "cubic"), BD_GOLDEN[name], strict=True):
        if want is not None:
            assert _bd_rate_by_quadrature(*BD_CURVES[name], method) == pytest.approx(want, rel=1e-9)


def test_pchip_is_fritsch_carlson_with_three_point_end_slopes():
    """The convention the module docstring names: interior slopes are the weighted harmonic mean
    of the neighbouring secants (0 at a local extremum), end slopes the shape-preserving
    three-point formula."""
    x = np.array([1.0, 2.0, 4.0, 5.0, 9.0])
    y = np.array([0.3, 1.0, 2.0, 2.5, 5.0])
    h, m = np.diff(x), np.diff(y) / np.diff(x)
    d = interpolate.PchipInterpolator(x, y).derivative()(x)
    w1, w2 = 2 * h[1:] + h[:-1], h[1:] + 2 * h[:-1]
    assert d[1:-1] == pytest.approx((w1 + w2) / (w1 / m[:-1] + w2 / m[1:]), rel=1e-12)
    assert d[0] == pytest.approx(((2 * h[0] + h[1]) * m[0] - h[0] * m[1]) / (h[0] + h[1]), rel=1e-12)
    assert d[-1] == pytest.approx(((2 * h[-1] + h[-2]) * m[-1] - h[-1] * m[-2]) / (h[-1] + h[-2]),
                                  rel=1e-12)
    # a three-point end slope against the sign of the end secant is clipped to 0 ...
    y[-1] = 2.6  # end secants 0.5 then 0.025: the formula gives -0.355
    assert interpolate.PchipInterpolator(x, y).derivative()(x[-1]) == 0.0
    # ... and an interior slope at a local extremum is 0
    peak = interpolate.PchipInterpolator([0.0, 1.0, 2.0], [0.0, 1.0, 0.0]).derivative()(1.0)
    assert peak == 0.0


def test_matched_bpp_reads_the_anchor_at_each_point():
    def pt(rate, bpp, psnr, lpips):
        return {"rate": rate, "n": 1, "bpp": bpp, "psnr": psnr, "psnr_float": psnr, "ms_ssim": None,
                "lpips": lpips, "lpips_paper": None, "encode_ms": 1.0, "decode_ms": 1.0}

    summary = {
        "elic": [pt("1", 0.1, 26.0, 0.4), pt("2", 0.2, 28.0, 0.3), pt("3", 0.4, 30.0, 0.2)],
        "taco": [pt("1", 0.2, 27.0, 0.2), pt("2", 0.05, 25.0, 0.5), pt("3", 0.3, 28.5, 0.15)],
    }
    rows = bdrate.matched_bpp(summary, "elic")["taco"]
    assert rows[0]["anchor_psnr"] == pytest.approx(28.0) and rows[0]["delta_psnr"] == pytest.approx(-1.0)
    assert rows[0]["delta_lpips"] == pytest.approx(-0.1)
    assert rows[1]["anchor_psnr"] is None and rows[1]["delta_psnr"] is None  # below ELIC's range
    # between two measured points, not extrapolated: equal log-bpp steps and equal PSNR steps make
    # the PCHIP a straight line in log-bpp, so ELIC at 0.3 bpp is 28 + 2·log2(1.5) dB
    assert rows[2]["anchor_psnr"] == pytest.approx(28.0 + 2.0 * math.log2(1.5), rel=1e-12)
    assert rows[2]["anchor_ms_ssim"] is None
    table = report.markdown_tables(summary, bdrate.bd_rates(summary, "elic"), "elic", "pchip")
    assert "At matched bpp" in table and "| taco | 1 | 0.200 | 27.00 | 28.00 | -1.00 |" in table


# --------------------------------------------------------------------------- inputs


def test_parse_rates():
    codecs = ["jpeg", "webp", "taco"]
    assert rates.parse_rates(None, codecs) == {"jpeg": None, "webp": None, "taco": None}
    got = rates.parse_rates(["30,50", "taco=0.0008,0.004;webp=10"], codecs)
    assert got == {"jpeg": [30.0, 50.0], "webp": [10.0], "taco": [0.0008, 0.004]}
    for bad in (["avif=10"], ["jpeg=x"], ["jpeg="]):
        with pytest.raises(ConfigError):
            rates.parse_rates(bad, codecs)
    assert schema.format_rate(50.0) == "50" and schema.format_rate(0.0008) == "0.0008"


def test_captions_policy(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"a.png": ["first", "second"], "b": "stem caption", "e.png": []}))
    caps = eval_io.load_captions(path)
    assert eval_io.caption_for(caps, Path("a.png")) == "first"
    assert eval_io.caption_for(caps, Path("b.png")) == "stem caption"
    assert eval_io.caption_for(caps, Path("e.png")) == ""
    assert eval_io.caption_for(caps, Path("zzz.png")) == ""
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError):
        eval_io.load_captions(path)


# --------------------------------------------------------------------------- end to end


def _write_images(folder: Path) -> None:
    folder.mkdir()
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:176, 0:200].astype(np.float64)
    smooth = np.stack([128 + 100 * np.sin(xx / 23), 128 + 90 * np.cos(yy / 13), (xx * 1.2) % 256], -1)
    img = np.clip(smooth + rng.normal(0, 8, smooth.shape), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(folder / "b_large.png")
    Image.fromarray(img[:96, :128]).save(folder / "a_small.png")  # exercises the MS-SSIM resize
    (folder / "notes.txt").write_text("not an image")


@pytest.fixture(scope="module")
def eval_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    images = root / "imgs"
    _write_images(images)
    captions = root / "captions.json"
    captions.write_text(json.dumps({"a_small.png": ["a caption"]}))
    out = root / "out"
    argv = ["--images", str(images), "--captions", str(captions), "--codecs", "jpeg,webp",
            "--rates", "jpeg=20,60", "--rates", "webp=20,60", "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 0
    return images, out, argv


def test_eval_outputs(eval_run):
    _, out, _ = eval_run
    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * 2 * 2
    assert tuple(rows[0]) == schema.CSV_COLUMNS
    for row in rows:
        assert float(row["bpp"]) == pytest.approx(
            8 * int(row["bytes"]) / (int(row["width"]) * int(row["height"])), rel=1e-5)
        assert float(row["psnr_float"]) == pytest.approx(float(row["psnr"]), abs=1e-3)
        assert 0 < float(row["lpips"]) < 1 and 0 < float(row["lpips_paper"]) < 1
        assert 0 < float(row["ms_ssim"]) <= 1
        assert row["ms_ssim_resized"] == ("1" if row["image"] == "a_small.png" else "0")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 2 and summary["anchor"] == "jpeg"
    jpeg = summary["codecs"]["jpeg"]
    assert [p["rate"] for p in jpeg] == ["20", "60"] and all(p["n"] == 2 for p in jpeg)
    mean_psnr = np.mean([float(r["psnr"]) for r in rows if r["codec"] == "jpeg" and r["rate"] == "60"])
    assert jpeg[1]["psnr"] == pytest.approx(mean_psnr, abs=1e-6)
    assert isinstance(summary["bd_rate"]["psnr"]["webp"], float)
    report = (out / "report.md").read_text()
    assert "BD-rate" in report and "| webp |" in report and "python -m app eval" in report
    html = (out / "rd_plots.html").read_text()
    assert "plotly" in html.lower() and '<script src="http' not in html  # self-contained
    assert (out / "rd_plots.png").stat().st_size > 1000


def test_rerun_skips_finished_rows_and_recovers_a_cut_line(eval_run, monkeypatch):
    images, out, argv = eval_run
    csv_path = out / "results.csv"
    before = csv_path.read_text()
    res = runner.run_eval(images, ["jpeg", "webp"], out, {"jpeg": [20, 60], "webp": [20, 60]},
                            progress=False)
    assert (res.computed, res.skipped) == (0, 8)
    assert csv_path.read_text() == before
    # an interrupted write leaves half a line: it is dropped and that row is recomputed
    lines = before.splitlines(keepends=True)
    csv_path.write_text("".join(lines[:-1]) + lines[-1][:10])
    res = runner.run_eval(images, ["jpeg", "webp"], out, {"jpeg": [20, 60], "webp": [20, 60]},
                            progress=False)
    assert (res.computed, res.skipped) == (1, 7)
    assert len(csv_path.read_text().splitlines()) == len(lines)


def test_eval_errors(tmp_path, eval_run, capsys):
    images, _, _ = eval_run
    assert cli.main(["--images", str(images), "--codecs", "bpg", "--out", str(tmp_path)]) == 2
    assert "bpg" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        runner.run_eval(images, ["jpeg"], tmp_path, anchor="webp", progress=False)
    with pytest.raises(TacoError):
        runner.run_eval(tmp_path / "missing", ["jpeg"], tmp_path, progress=False)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "results.csv").write_text("a,b\n1,2\n")
    with pytest.raises(TacoError, match="columns"):
        runner.run_eval(images, ["jpeg"], bad, {"jpeg": [50]}, progress=False)


class _FakeLearned(JpegLearned):
    """A learned-codec stand-in: JPEG bytes, a λ ladder, and a float output that is flat grey."""

    def decompress_float(self, data):
        return np.full((*np.asarray(self.inner.decompress(data)).shape[:2], 3), 0.5)  # grey: low PSNR


def test_learned_codec_is_loaded_lazily_with_defaults(tmp_path, eval_run, monkeypatch):
    images, _, _ = eval_run
    fake = _FakeLearned()
    monkeypatch.setattr(app.codecs, "load_codec", lambda name, checkpoint=None, device="cpu": fake)
    res = runner.run_eval(images, ["fake", "jpeg"], tmp_path, {"jpeg": [20, 60]},
                            captions=None, anchor="jpeg", limit=1, progress=False)
    assert [p["rate"] for p in res.summary["fake"]] == ["10", "40", "90"]  # from rate_ladder
    point = res.summary["fake"][0]
    assert point["psnr_float"] < point["psnr"] - 3  # the hook's output is what psnr_float measures
    assert fake.captions == ["", "", ""]


def test_eval_help_lists_default_rates(capsys):
    with pytest.raises(SystemExit):
        cli.setup_args().parse_args(["--help"])
    text = capsys.readouterr().out
    assert "jpeg  quality 5,10,20,35,50,75" in text and "rate_ladder" in text


@pytest.mark.shared
def test_kodak_jpeg_q50_sanity_anchor(kodak_dir):
    """Pillow JPEG quality 50 on Kodak-24: ≈ 0.906 bpp and 32.17 dB (mean of per-image values)."""
    from app.codecs.classical import get_classical_codec
    from app.metrics import psnr

    codec = get_classical_codec("jpeg")
    files = eval_io.list_images(kodak_dir)
    assert len(files) == 24
    bpps, psnrs = [], []
    for f in files:
        img = eval_io.load_rgb(f)
        data = codec.compress(img, lmbda=50)
        bpps.append(8 * len(data) / (img.shape[0] * img.shape[1]))
        psnrs.append(psnr(img, codec.decompress(data)))
    assert np.mean(bpps) == pytest.approx(0.906, abs=0.005)
    assert np.mean(psnrs) == pytest.approx(32.17, abs=0.02)


# --------------------------------------------------------------------------- bench


def test_bench_json(tmp_path, capsys):
    img = tmp_path / "x.png"
    Image.fromarray(np.full((64, 80, 3), 120, np.uint8)).save(img)
    assert bench.main(["--image", str(img), "--codecs", "jpeg,webp", "--repeat", "2", "--warmup", "0"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["size"] == [80, 64] and set(report["codecs"]) == {"jpeg", "webp"}
    for entry in report["codecs"].values():
        assert entry["compress"]["repeat"] == 2 and entry["compress"]["median_ms"] >= 0
        assert entry["decompress"]["median_ms"] >= 0 and entry["bytes"] > 0
    assert report["peak_rss_mb"] > 0
    assert bench.main(["--image", str(img), "--codecs", "nope"]) == 2


def test_bench_extra_hook():
    calls = []
    report = bench.run_bench(np.zeros((16, 16, 3), np.uint8), {}, repeat=3, warmup=1,
                             extra={"noop": lambda: calls.append(1)})
    assert len(calls) == 4 and report["extra"]["noop"]["repeat"] == 3
    assert math.isfinite(report["extra"]["noop"]["median_ms"])


@pytest.mark.parametrize(
    "mode, expected",
    [("given", ["a caption", "b caption"]), ("empty", ["", ""]), ("other", ["b caption", "a caption"])],
)
def test_caption_modes_measure_the_caption_effect(tmp_path, eval_run, monkeypatch, mode, expected):
    images, _, _ = eval_run
    fake = _FakeLearned()
    fake.rate_ladder = [10.0]
    monkeypatch.setattr(app.codecs, "load_codec", lambda name, checkpoint=None, device="cpu": fake)
    caps = tmp_path / "caps.json"
    caps.write_text(json.dumps({"a_small.png": "a caption", "b_large.png": ["b caption", "x"]}))
    res = runner.run_eval(images, ["fake"], tmp_path / mode, captions=caps, progress=False,
                            caption_mode=mode)
    assert fake.captions == expected
    assert json.loads(res.summary_path.read_text())["caption_mode"] == mode


def test_rerun_after_new_weights_measures_that_codec_again(tmp_path, eval_run, monkeypatch, capsys):
    """Rows made by other weights are not reused: provenance.json records each codec's fingerprint."""
    images, _, _ = eval_run
    fake = _FakeLearned()
    fake.rate_ladder = [40.0]
    fake.weights = b"\x01" * 8
    monkeypatch.setattr(app.codecs, "load_codec", lambda name, checkpoint=None, device="cpu": fake)
    out = tmp_path / "out"
    run = dict(rates={"jpeg": [60]}, progress=False)
    first = runner.run_eval(images, ["fake", "jpeg"], out, **run)
    assert (first.computed, first.skipped, first.stale) == (4, 0, {})
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["rows"]["fake@40"] == "weights:" + "01" * 8
    assert prov["rows"]["jpeg@60"].startswith("pillow:")
    again = runner.run_eval(images, ["fake", "jpeg"], out, **run)
    assert (again.computed, again.skipped) == (0, 4)

    fake.fingerprint = lambda lmbda=None: b"\x02" * 8  # type: ignore[attr-defined]  # retrained
    argv = ["--images", str(images), "--codecs", "fake,jpeg", "--rates", "jpeg=60", "--out", str(out),
            "--no-progress"]
    assert cli.main(argv) == 0
    assert "fake: weights or encoder changed" in capsys.readouterr().out
    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted((r["codec"], r["image"]) for r in rows) == [
        ("fake", "a_small.png"), ("fake", "b_large.png"), ("jpeg", "a_small.png"), ("jpeg", "b_large.png")]
    assert json.loads((out / "provenance.json").read_text())["rows"]["fake@40"] == "weights:" + "02" * 8

    # a different caption mode in the same folder is refused with a one-line error
    with pytest.raises(ConfigError, match="caption-mode 'given'"):
        runner.run_eval(images, ["fake"], out, progress=False, caption_mode="empty")
