"""FID / KID of the evaluation (app.realism): torch-fidelity distances, features on disk, no download."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from app import realism
from app.errors import ConfigError
from app.eval import cli, runner
from app.eval import distributed as eval_dist


def _images(folder: Path, n: int = 5, size: int = 48) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(11)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    for i in range(n):
        base = np.stack([128 + 90 * np.sin(xx / (4 + i)), 128 + 80 * np.cos(yy / (3 + i)),
                         (xx * (i + 1)) % 256], -1)
        img = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"im{i}.png")
    return folder


def _tiny_extractor() -> realism.Extractor:
    """An Inception-shaped stand-in: uint8 HxWx3 -> a small random conv net -> pooled features."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 12, 3, stride=2), torch.nn.ReLU(),
                              torch.nn.Conv2d(12, 16, 3, stride=2), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()

    def run(images):
        with torch.no_grad():
            return np.concatenate([net(torch.from_numpy(np.array(im)).permute(2, 0, 1)[None]
                                       .float() / 255).numpy() for im in images], 0)

    return run


@pytest.fixture()
def fast_metrics(monkeypatch):
    import app.metrics

    # these tests are about FID; stand-ins keep the other metrics of each row cheap
    monkeypatch.setattr(app.metrics, "ms_ssim", lambda a, b: float(np.mean(a == b)))
    monkeypatch.setattr(app.metrics, "lpips", lambda a, b, convention="standard": float(np.mean(a != b)))


def test_distances_match_the_textbook_formulas():
    from scipy import linalg

    rng = np.random.default_rng(0)
    a = rng.normal(size=(40, 6))
    b = rng.normal(0.5, 1.3, size=(30, 6))
    got = realism.distances(a, b)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    d = a.mean(0) - b.mean(0)
    want = d @ d + np.trace(s1) + np.trace(s2) - 2 * np.trace(linalg.sqrtm(s1 @ s2).real)
    assert got["fid"] == pytest.approx(want, rel=1e-6)
    assert realism.distances(a, a)["fid"] == pytest.approx(0.0, abs=1e-6)
    assert got["kid"] > abs(realism.distances(a, a[::-1])["kid"])
    assert realism.distances(a[:1], b) == {"fid": None, "kid": None, "kid_std": None}


def test_crops():
    img = np.zeros((70, 50, 3), np.uint8)
    assert [c.shape for c in realism.crops(img, 0)] == [(70, 50, 3)]
    assert [c.shape for c in realism.crops(img, 32)] == [(32, 32, 3)] * 2
    assert realism.crops(img, 64) == []


def test_fid_kid_in_summary_and_report_also_when_sharded(tmp_path, monkeypatch, fast_metrics):
    images = _images(tmp_path / "imgs")
    real = realism.Realism(_tiny_extractor(), "tiny test network")
    run = dict(rates={"jpeg": [3, 95], "webp": [1, 95]}, progress=False, realism=real)
    one = runner.run_eval(images, ["jpeg", "webp"], tmp_path / "one", **run)
    for points in one.summary.values():
        low, high = sorted(points, key=lambda p: p["bpp"])
        assert low["fid"] > high["fid"] >= -1e-6  # heavier compression: further from the originals
        assert low["kid"] is not None and low["kid_std"] >= 0
    summary = json.loads(one.summary_path.read_text())
    assert summary["realism"]["computed"] and summary["codecs"]["jpeg"][0]["fid"] is not None
    report = one.report_path.read_text()
    assert "Realism against the originals" in report and "| jpeg | 3 |" in report
    assert len(list((tmp_path / "one" / "features" / "jpeg@95").glob("*.npy"))) == 5
    assert len(list((tmp_path / "one" / "features" / "original").glob("*.npy"))) == 5

    monkeypatch.setattr(eval_dist, "barrier", lambda info: None)
    out = tmp_path / "two"
    runner.run_eval(images, ["jpeg", "webp"], out, dist=eval_dist.DistInfo(1, 2), **run)
    two = runner.run_eval(images, ["jpeg", "webp"], out, dist=eval_dist.DistInfo(0, 2), **run)
    for codec, points in one.summary.items():
        for p, q in zip(points, two.summary[codec], strict=True):
            assert (p["fid"], p["kid"]) == pytest.approx((q["fid"], q["kid"]), rel=1e-9)

    # rows measured without features (an earlier run without FID) give no FID, and say so
    plain = tmp_path / "plain"
    runner.run_eval(images, ["jpeg"], plain, {"jpeg": [50]}, progress=False)
    again = runner.run_eval(images, ["jpeg"], plain, {"jpeg": [50]}, progress=False, realism=real)
    assert again.computed == 0 and again.summary["jpeg"][0]["fid"] is None
    assert "5 rows without features" in again.report_path.read_text()


def test_fid_over_crops(tmp_path, fast_metrics):
    images = _images(tmp_path / "imgs", n=3, size=48)
    real = realism.Realism(_tiny_extractor(), "tiny test network", patch=24)
    res = runner.run_eval(images, ["jpeg"], tmp_path / "out", {"jpeg": [10]}, progress=False,
                            realism=real)
    point = res.summary["jpeg"][0]
    assert point["fid_samples"] == [12, 12] and point["fid"] is not None  # 4 crops per image
    assert "non-overlapping 24x24 crops" in res.report_path.read_text()


def test_without_weights_one_line_and_no_download(tmp_path, monkeypatch, refused_connections, fast_metrics):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    off = realism.resolve(None)
    assert not off.enabled and "no Inception weights" in off.note and "nothing was downloaded" in off.note
    images = _images(tmp_path / "imgs", n=2)
    out = tmp_path / "out"
    argv = ["--images", str(images), "--codecs", "jpeg", "--rates", "50", "--out", str(out),
            "--no-progress", "--plotlyjs", "cdn"]
    assert cli.main(argv) == 0
    lines = [line for line in (out / "report.md").read_text().splitlines() if "FID" in line]
    assert len(lines) == 1 and lines[0].startswith("FID / KID: not computed: no Inception weights")
    assert json.loads((out / "summary.json").read_text())["realism"]["computed"] is False
    assert not (out / "features").exists()
    assert cli.main([*argv, "--inception-weights", str(tmp_path / "nope.pth")]) == 2
    with pytest.raises(ConfigError):
        realism.resolve(tmp_path / "nope.pth")
    assert refused_connections == []


@pytest.mark.slow
def test_torch_fidelity_inception_from_a_local_file(tmp_path, monkeypatch, refused_connections):
    """The library's own network, loaded from a user's weights file (random weights made here)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    with monkeypatch.context() as m:  # build the architecture without any weights to get a file
        m.setattr(torch, "load", lambda *a, **k: {})
        m.setattr(FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, **k: None)
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                          feature_extractor_weights_path="unused")
    weights = tmp_path / "inception.pth"
    torch.save(net.state_dict(), weights)
    del net
    real = realism.resolve(weights)
    assert real.enabled and "inception.pth" in real.note
    rng = np.random.default_rng(1)
    feats = real.extractor([rng.integers(0, 256, (40, 56, 3), dtype=np.uint8) for _ in range(2)])
    assert feats.shape == (2, 2048) and np.isfinite(feats).all()
    # a pickle that is not plain tensors is refused before torch-fidelity would unpickle it
    evil = tmp_path / "evil.pth"
    torch.save({"x": _Unpicklable()}, evil)
    with pytest.raises(ConfigError, match="not a plain state dict"):
        realism.resolve(evil)
    assert refused_connections == []


class _Unpicklable:
    """An object a weights-only load refuses (any non-tensor class)."""
