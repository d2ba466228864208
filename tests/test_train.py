"""Training pipeline tests: data, losses, the 2-step CLI run, resume, init_from and DDP.

Everything runs on synthetic images in ``tmp_path`` and tiny random models: no ``../shared`` needed
(the shipped-config checks skip without it). The CLI runs are subprocesses, as a user would run them.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from app.errors import ConfigError
from app.train import autotune as tautotune
from app.train import checkpoint as tcheckpoint
from app.train import cli as tcli
from app.train import config as tconfig
from app.train import data as tdata
from app.train import engine as tengine
from app.train import losses as tlosses
from app.train import precision as tprecision
from app.train import schedule as tschedule
from app.train import warmstart as twarmstart

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

#: Tiny models (a few seconds per step on one core). Shipped "*-tiny" configs would do as well;
#: inline dicts keep these tests independent of how small those are.
TINY_TACO = {
    "name": "taco-test", "arch": "taco", "N": 32, "M": 48, "slices": [8, 8, 32],
    "ctx_hidden": [32, 32], "text_dim": 384, "text_encoder": "minilm", "heads": 4,
    "variable_rate": True, "lmbda_ladder": [0.002, 0.01, 0.05], "lmbda_range": [0.002, 0.05],
}
TINY_ELIC = {**TINY_TACO, "name": "elic-test", "arch": "elic"}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1",
               PYTHONPATH=str(REPO))
    return env


def _make_folder(root: Path, n: int = 6) -> Path:
    """Synthetic photos (smooth gradients + noise), one smaller than the crop, with captions."""
    rng = np.random.default_rng(0)
    folder = root / "photos"
    (folder / "sub").mkdir(parents=True)
    caps: dict[str, object] = {}
    for i in range(n):
        h, w = (100, 90) if i == 0 else (150 + 8 * i, 200)
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([(xx * 3 + i * 20) % 256, (yy * 2) % 256, (xx + yy) % 256], -1)
        arr = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
        name = f"im{i}.png" if i < n - 1 else "sub/last.jpg"
        Image.fromarray(arr).save(folder / name)
        if i % 3 == 0:
            caps[name] = [f"picture number {i}", "a synthetic test image"]
        elif i % 3 == 1:
            caps[Path(name).name] = f"caption {i}"
    (folder / "captions.json").write_text(json.dumps(caps))
    return folder


def _write_config(tmp: Path, model: dict, **extra: object) -> Path:
    _make_folder(tmp / "data")
    cfg = {
        "model": model, "data_root": str(tmp / "data"),
        "sources": [{"type": "folder", "root": "photos"}],
        "crop": 64, "cache_short_side": 128, "batch_size": 2, "max_steps": 2, "threads": 1,
        "k_P": 1.0, "lr_milestones": [], "log_every": 1, "save_every_steps": 1,
        "eval_images": ["photos/im3.png"], "eval_every_steps": 0, "eval_at_end": True,
        "eval_max_side": 64, "eval_lmbdas": [0.002, 0.05],
    }
    cfg.update(extra)
    path = tmp / "cfg.json"
    path.write_text(json.dumps(cfg, indent=1))
    return path


def _run_cli(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "app", "train", *args], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["kodak", "coco_val2017", "Kodak"])
def test_eval_folders_are_refused(tmp_path: Path, bad: str) -> None:
    folder = tmp_path / bad
    folder.mkdir()
    Image.new("RGB", (80, 80)).save(folder / "a.png")
    with pytest.raises(tdata.EvalDataError):
        tdata.check_not_eval_path(folder)
    with pytest.raises(tdata.EvalDataError):
        tdata.records_from_sources([{"type": "folder", "root": str(folder)}])
    with pytest.raises(tdata.EvalDataError):
        tdata.load_eval_images([str(folder / "a.png")])


def test_training_folder_with_similar_name_is_allowed(tmp_path: Path) -> None:
    folder = tmp_path / "coco_val2017_train"
    folder.mkdir()
    Image.new("RGB", (80, 80)).save(folder / "a.png")
    recs = tdata.records_from_sources([{"type": "folder", "root": "coco_val2017_train"}],
                                      data_root=tmp_path)
    assert len(recs) == 1 and recs[0].captions == []


def test_symlink_into_eval_folder_is_refused(tmp_path: Path) -> None:
    evald = tmp_path / "kodak"
    evald.mkdir()
    Image.new("RGB", (80, 80)).save(evald / "kodim01.png")
    train = tmp_path / "train"
    train.mkdir()
    (train / "x.png").symlink_to(evald / "kodim01.png")
    with pytest.raises(tdata.EvalDataError):
        tdata.records_from_sources([{"type": "folder", "root": str(train)}])


def test_folder_records_and_captions(tmp_path: Path) -> None:
    folder = _make_folder(tmp_path)
    recs = tdata.folder_records(folder)
    assert [r.path.name for r in recs] == [f"im{i}.png" for i in range(5)] + ["last.jpg"]
    by_name = {r.path.name: r.captions for r in recs}
    assert by_name["im0.png"] == ["picture number 0", "a synthetic test image"]
    assert by_name["im1.png"] == ["caption 1"]  # keyed by bare file name
    assert by_name["im2.png"] == []  # no caption -> ""
    only = tdata.folder_records(folder, only_captioned=True)
    assert all(r.captions for r in only) and len(only) == 4


def test_coco_records(tmp_path: Path) -> None:
    imgs = tmp_path / "coco_train"
    imgs.mkdir()
    for name in ("000000000001.jpg", "000000000002.jpg"):
        Image.new("RGB", (90, 70), (10, 200, 30)).save(imgs / name)
    ann = {
        "images": [{"id": 1, "file_name": "000000000001.jpg"},
                   {"id": 2, "file_name": "000000000002.jpg"},
                   {"id": 3, "file_name": "missing.jpg"}],
        "annotations": [{"id": 10, "image_id": 1, "caption": "a green square"},
                        {"id": 11, "image_id": 1, "caption": " a flat image "},
                        {"id": 12, "image_id": 3, "caption": "gone"}],
    }
    (tmp_path / "captions_train.json").write_text(json.dumps(ann))
    recs = tdata.records_from_sources(
        [{"type": "coco", "images": "coco_train", "annotations": "../captions_train.json"},
         {"type": "folder", "root": "coco_train", "repeat": 2}],
        data_root=tmp_path)
    assert len(recs) == 2 + 4
    assert recs[0].captions == ["a green square", "a flat image"]
    assert recs[1].captions == []
    with pytest.raises(ConfigError):
        tdata.coco_records(imgs, "../captions_train.json", skip_missing=False)


def test_dataset_modes_crops_and_determinism(tmp_path: Path) -> None:
    folder = tmp_path / "modes"
    folder.mkdir()
    rng = np.random.default_rng(1)
    rgb = (rng.random((120, 160, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).convert("L").save(folder / "grey.png")
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg")
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(folder / "alpha.png")
    Image.fromarray(rgb).convert("P").save(folder / "palette.png")
    Image.fromarray(rgb[:40, :50]).save(folder / "small.png")  # below the crop: resized up
    Image.fromarray((rgb.astype(np.uint16) * 257)[..., 0], "I;16").save(folder / "sixteen.png")
    big = np.tile(rgb, (6, 6, 1))  # 720x960: downscaled to short side 96 in the cache
    Image.fromarray(big).save(folder / "big.jpg", quality=95)
    recs = tdata.folder_records(folder)
    ds = tdata.CaptionedImageDataset(recs, crop=64, cache_short_side=96)
    assert len(ds) == 7
    for arr in ds.images:
        assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3
        assert 64 <= min(arr.shape[:2]) <= 96
    alpha = ds.images[[r.path.name for r in recs].index("alpha.png")]
    assert alpha.mean() > rgb.mean()  # flattened onto white
    for i in range(len(ds)):
        img, cap = ds[(i, 1234)]
        assert img.shape == (3, 64, 64) and img.dtype == torch.float32 and cap == ""
        assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0
        again, _ = ds[(i, 1234)]
        assert torch.equal(img, again)
    img, cap = ds[0]  # plain index: seed from torch's RNG
    assert img.shape == (3, 64, 64)


def test_caption_sampling_and_flip(tmp_path: Path) -> None:
    folder = tmp_path / "one"
    folder.mkdir()
    arr = np.tile(np.arange(64, dtype=np.uint8)[None, :, None] * 4, (64, 1, 3))
    Image.fromarray(arr).save(folder / "ramp.png")
    (folder / "captions.json").write_text(json.dumps({"ramp.png": ["one", "two", "three"]}))
    ds = tdata.CaptionedImageDataset(tdata.folder_records(folder), crop=64, cache_short_side=None)
    seen, flips = set(), set()
    for seed in range(60):
        img, cap = ds[(0, seed)]
        seen.add(cap)
        flips.add(bool(img[0, 0, 0] > img[0, 0, -1]))
    assert seen == {"one", "two", "three"}
    assert flips == {True, False}
    assert ds.captions() == ["", "one", "two", "three"]


def test_sampler_shards_and_resumes() -> None:
    n, world = 10, 2
    per_rank = [tdata.InfiniteShardedSampler(n, seed=3, rank=r, world=world) for r in range(world)]
    first_epoch = [[k[0] for k in _take(s, n // world)] for s in per_rank]
    assert sorted(first_epoch[0] + first_epoch[1]) == list(range(n))
    full = _take(tdata.InfiniteShardedSampler(n, seed=3), 23)
    resumed = _take(tdata.InfiniteShardedSampler(n, seed=3, start=13), 10)
    assert full[13:] == resumed
    assert len({k[1] for k in full}) == len(full)  # distinct per-sample seeds


def _take(sampler: tdata.InfiniteShardedSampler, k: int) -> list[tuple[int, int]]:
    it = iter(sampler)
    return [next(it) for _ in range(k)]


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------


def test_rate_term_is_minus_log2_likelihood_per_pixel() -> None:
    torch.manual_seed(0)
    lik = {"y": torch.rand(2, 8, 4, 4).clamp_min(1e-3), "z": torch.rand(2, 4, 1, 1).clamp_min(1e-3)}
    pixels = 2 * 64 * 64
    expect = -(torch.log2(lik["y"]).sum() + torch.log2(lik["z"]).sum()) / pixels
    got = tlosses.bpp_from_likelihoods(lik, pixels)
    assert torch.allclose(got, expect, rtol=1e-6)
    x = torch.rand(2, 3, 64, 64)
    x_hat = (x + 0.05 * torch.randn_like(x))
    crit = tlosses.RateDistortionLoss()
    out = crit({"x_hat": x_hat, "likelihoods": lik}, x, 0.01)
    mse = torch.mean((x_hat - x) ** 2)
    assert torch.allclose(out["mse"], mse)
    assert torch.allclose(out["loss"], expect + 0.01 * 255**2 * mse, rtol=1e-5)
    # per-sample λ: the mean of λ_i·MSE_i
    lam = torch.tensor([0.01, 0.04])
    per = ((x_hat - x) ** 2).flatten(1).mean(1)
    out2 = crit({"x_hat": x_hat, "likelihoods": lik}, x, lam)
    assert torch.allclose(out2["loss"], expect + 255**2 * (lam * per).mean(), rtol=1e-5)


def test_lpips_term_standard_convention() -> None:
    class FakeLpips(torch.nn.Module):
        def forward(self, a, b, normalize=False):  # records the convention it was called with
            self.normalize = normalize
            return (a - b).abs().mean(dim=(1, 2, 3), keepdim=True)

    fake = FakeLpips()
    x = torch.rand(2, 3, 64, 64)
    lik = {"y": torch.full((2, 4, 4, 4), 0.5)}
    out = tlosses.RateDistortionLoss(k_p=2.0, lpips=fake)({"x_hat": x * 0.9, "likelihoods": lik}, x, 0.01)
    assert fake.normalize is True
    base = out["bpp"] + 0.01 * 255**2 * out["mse"]
    assert torch.allclose(out["loss"], base + 2.0 * out["lpips"])


@pytest.fixture(scope="module")
def tiny_clip():
    import open_clip

    return tlosses.build_tiny_clip(), open_clip.get_tokenizer("ViT-B-32")


def test_clip_preprocess_shapes() -> None:
    x = torch.rand(2, 3, 128, 192, requires_grad=True)
    y = tlosses.clip_preprocess(x)
    assert y.shape == (2, 3, 224, 224)
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    flat = torch.full((1, 3, 256, 256), 0.5)
    got = tlosses.clip_preprocess(flat)[0, :, 100, 100]
    expect = (0.5 - torch.tensor(tlosses.CLIP_MEAN)) / torch.tensor(tlosses.CLIP_STD)
    assert torch.allclose(got, expect, atol=1e-5)


def test_joint_loss_on_tiny_open_clip(tiny_clip) -> None:
    model, tok = tiny_clip
    joint = tlosses.JointImageTextLoss(model, tok)
    caps = ["a red car", "two dogs on grass", ""]
    t = joint.embed_text(caps)
    assert t.shape == (3, 16) and torch.allclose(t.norm(dim=-1), torch.ones(3), atol=1e-5)
    # 38-token truncation padded to 77 equals the untruncated embedding for short captions
    full = torch.nn.functional.normalize(model.encode_text(tok(caps[:1])), dim=-1)
    assert torch.allclose(full, t[:1], atol=1e-5)
    torch.manual_seed(0)
    x = torch.rand(3, 3, 64, 64)
    x_hat = (x + 0.1 * torch.randn_like(x)).requires_grad_()
    out = joint(x_hat, x, t)
    # reference computation
    e_hat = torch.nn.functional.normalize(model.encode_image(tlosses.clip_preprocess(x_hat)), dim=-1)
    e_ref = torch.nn.functional.normalize(model.encode_image(tlosses.clip_preprocess(x)), dim=-1)
    logits = math.exp(2.6592) * t @ e_hat.t()
    lab = torch.arange(3)
    contrastive = 0.5 * (torch.nn.functional.cross_entropy(logits, lab)
                         + torch.nn.functional.cross_entropy(logits.t(), lab))
    image = torch.sqrt(((e_hat - e_ref) ** 2).sum())
    assert torch.allclose(out["contrastive"], contrastive, rtol=1e-4)
    assert torch.allclose(out["image"], image, rtol=1e-4)
    assert torch.allclose(out["joint"], contrastive + 40 * image, rtol=1e-4)
    out["joint"].backward()
    assert x_hat.grad is not None and float(x_hat.grad.abs().sum()) > 0
    assert all(p.grad is None for p in model.parameters())  # CLIP is frozen
    same = joint(x.clone(), x, t)
    assert float(same["image"]) < 1e-5
    crit = tlosses.RateDistortionLoss(k_j=0.5, joint=joint)
    lik = {"y": torch.full((3, 4, 4, 4), 0.5)}
    total = crit({"x_hat": x_hat.detach(), "likelihoods": lik}, x, 0.01, t)
    assert torch.allclose(total["loss"], total["bpp"] + 0.01 * 255**2 * total["mse"] + 0.5 * total["joint"])


def test_load_clip_offline_reports_reason(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tok, why = tlosses.load_clip("ViT-B-32", "openai", checkpoint=tmp_path / "none.pt")
    assert model is None and tok is None and "unavailable" in why


# --------------------------------------------------------------------------------------------
# Loop pieces
# --------------------------------------------------------------------------------------------


def test_sample_lmbda_log_uniform_and_rank_independent() -> None:
    vals = [tschedule.sample_lmbda(0.0025, 0.05, 7, s) for s in range(2000)]
    assert all(0.0025 <= v <= 0.05 for v in vals)
    assert vals == [tschedule.sample_lmbda(0.0025, 0.05, 7, s) for s in range(2000)]
    logs = np.log(vals)
    mid = (math.log(0.0025) + math.log(0.05)) / 2
    assert abs(float(np.mean(logs)) - mid) < 0.1  # uniform in log λ
    per = tschedule.sample_lmbda(0.0025, 0.05, 7, 3, n=8)
    assert isinstance(per, torch.Tensor) and per.shape == (8,)


def test_sample_lmbda_power_favours_high_lmbda() -> None:
    lo, hi = 0.0018, 0.0483
    vals = [tschedule.sample_lmbda(lo, hi, 7, s, sampling="power", power=2.0) for s in range(4000)]
    assert all(lo <= v <= hi for v in vals)
    assert vals == [tschedule.sample_lmbda(lo, hi, 7, s, sampling="power", power=2.0) for s in range(4000)]
    t = (np.log(vals) - math.log(lo)) / (math.log(hi) - math.log(lo))
    assert abs(float(np.mean(t)) - 2 / 3) < 0.02  # density 2t on [0, 1]: mean 2/3
    assert abs(float(np.mean(t > 5 / 6)) - (1 - (5 / 6) ** 2)) < 0.03  # top sixth: 31 %
    # power 1 and the default are the log-uniform draws of earlier runs, value for value
    assert [tschedule.sample_lmbda(lo, hi, 7, s) for s in range(50)] == [
        tschedule.sample_lmbda(lo, hi, 7, s, sampling="loguniform", power=3.0) for s in range(50)]
    per = tschedule.sample_lmbda(lo, hi, 7, 3, n=8, sampling="power", power=2.0)
    assert isinstance(per, torch.Tensor) and per.shape == (8,) and len(set(per.tolist())) == 8
    with pytest.raises(ConfigError):
        tschedule.sample_lmbda(lo, hi, 7, 0, sampling="uniform")


def test_lr_warmup_then_milestones() -> None:
    p = torch.nn.Parameter(torch.zeros(1))
    sch = tschedule.MilestoneSchedule(torch.optim.Adam([p], lr=4e-4), [0.8], 0.1, max_steps=1000,
                                  max_minutes=None, warmup_steps=3)
    lrs = []
    for step in (0, 1, 2, 3, 500, 799, 800):
        sch.update(step, 0.0)
        lrs.append(sch.lr)
    assert lrs == pytest.approx([1e-4, 2e-4, 3e-4, 4e-4, 4e-4, 4e-4, 4e-5])


def test_lpips_weight_scale_ramp_and_lmbda() -> None:
    assert tschedule.lpips_weight_scale(0.01, 5, 0, None) == 1.0
    assert tschedule.lpips_weight_scale(0.01, 0, 100, None) == 0.0
    assert tschedule.lpips_weight_scale(0.01, 25, 100, None) == pytest.approx(0.25)
    assert tschedule.lpips_weight_scale(0.01, 100, 100, None) == 1.0
    assert tschedule.lpips_weight_scale(0.01, 200, 100, 0.04) == pytest.approx(0.25)
    lam = torch.tensor([0.01, 0.04])
    sc = tschedule.lpips_weight_scale(lam, 50, 100, 0.04)
    assert torch.allclose(sc, torch.tensor([0.125, 0.5]))
    with pytest.raises(ConfigError):
        tschedule.lpips_weight_scale(0.01, 0, 0, 0.0)


def test_per_sample_lpips_weight_in_the_loss() -> None:
    class FakeLpips(torch.nn.Module):
        def forward(self, a, b, normalize=False):
            return (a - b).abs().mean(dim=(1, 2, 3), keepdim=True)

    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32)
    x_hat = x * torch.tensor([0.9, 0.5]).view(2, 1, 1, 1)
    lik = {"y": torch.full((2, 4, 4, 4), 0.5)}
    crit = tlosses.RateDistortionLoss(k_p=2.0, lpips=FakeLpips())
    out = crit({"x_hat": x_hat, "likelihoods": lik}, x, 0.01, None, k_p_scale=torch.tensor([1.0, 0.0]))
    per = (x_hat - x).abs().mean(dim=(1, 2, 3))
    base = out["bpp"] + 0.01 * 255**2 * out["mse"]
    assert torch.allclose(out["loss"], base + 2.0 * per[0] / 2)
    assert torch.allclose(out["lpips"], per.mean())  # the logged LPIPS stays unweighted
    same = crit({"x_hat": x_hat, "likelihoods": lik}, x, 0.01)
    assert torch.allclose(same["loss"], base + 2.0 * per.mean())


def test_milestone_schedule_steps_fractions_and_time() -> None:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=1e-3)
    sch = tschedule.MilestoneSchedule(opt, [0.5, 900], 0.1, max_steps=1000, max_minutes=60)
    sch.update(0, 0)
    assert sch.lr == pytest.approx(1e-3)
    assert sch.update(500, 1.0) and sch.lr == pytest.approx(1e-4)
    assert sch.update(900, 1.0) and sch.lr == pytest.approx(1e-5)
    sch2 = tschedule.MilestoneSchedule(torch.optim.Adam([p], lr=1e-3), [0.8], 0.1, None, 100)
    sch2.update(10, 79.0)
    assert sch2.lr == pytest.approx(1e-3)
    sch2.update(11, 80.5)  # time-based drop
    assert sch2.lr == pytest.approx(1e-4)
    sch2.update(12, 1.0)  # monotone
    assert sch2.lr == pytest.approx(1e-4)
    restored = tschedule.MilestoneSchedule(torch.optim.Adam([p], lr=1e-3), [0.8], 0.1, None, 100)
    restored.load_state_dict(sch2.state_dict())
    restored.update(0, 0.0)
    assert restored.lr == pytest.approx(1e-4)


def test_elic_to_taco_key_map() -> None:
    m = twarmstart.map_elic_to_taco_key
    assert m("g_a.analysis_transform.7.branch.0.weight") == "g_a.analysis_transform.7.branch.0.weight"
    assert m("g_a.analysis_transform.8.conv_a.0.conv1.weight") == "g_a.analysis_transform.9.conv_a.0.conv1.weight"
    assert m("g_a.analysis_transform.9.weight") == "g_a.analysis_transform.10.weight"
    assert m("g_a.analysis_transform.12.branch.4.bias") == "g_a.analysis_transform.13.branch.4.bias"
    assert m("g_a.analysis_transform.13.weight") == "g_a.analysis_transform.16.weight"
    assert m("g_a.analysis_transform.14.conv_b.0.weight") == "g_a.analysis_transform.17.conv_b.0.weight"
    assert m("g_s.synthesis_transform.9.weight") == "g_s.synthesis_transform.9.weight"


def test_init_taco_from_elic_weights() -> None:
    from app.models.factory import create_model

    torch.manual_seed(0)
    elic = create_model(TINY_ELIC)
    taco = create_model(TINY_TACO)
    with torch.no_grad():
        for name, p in taco.named_parameters():
            if name.endswith("gamma"):
                p.fill_(0.5)
    rep = twarmstart.init_from_weights(taco, elic.state_dict())
    assert rep["remapped"] and not rep["mismatched"] and not rep["unused"]
    e, t = elic.state_dict(), taco.state_dict()
    for ei, ti in twarmstart.ELIC_TO_TACO_GA.items():
        ek = [k for k in e if k.startswith(f"g_a.analysis_transform.{ei}.")]
        assert ek, ei
        for k in ek:
            tk = k.replace(f"analysis_transform.{ei}.", f"analysis_transform.{ti}.", 1)
            assert torch.equal(e[k], t[tk]), k
    for k in e:
        if not k.startswith("g_a."):
            assert torch.equal(e[k], t[k]), k
    gammas = [p for n, p in taco.named_parameters() if n.endswith("gamma")]
    assert len(gammas) == 2 and all(float(g.detach().abs().max()) == 0 for g in gammas)
    assert all(k.startswith("g_a.analysis_transform.") for k in rep["not_loaded"])


def test_transform_autocast_keeps_likelihoods_fp32() -> None:
    from app.models.factory import create_model

    torch.manual_seed(0)
    model = create_model(TINY_ELIC).train().to(memory_format=torch.channels_last)
    amp = tprecision.TransformAutocast(model, ["g_a", "g_s", "h_a", "h_s", "nope"], "cpu")
    assert amp.wrapped == ["g_a", "g_s", "h_a", "h_s"] and amp.missing == ["nope"]
    x = torch.rand(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    out = model(x, lmbda=0.01)
    assert out["x_hat"].dtype == torch.float32
    assert all(v.dtype == torch.float32 for v in out["likelihoods"].values())
    loss = tlosses.RateDistortionLoss()(out, x, 0.01)["loss"]
    loss.backward()
    assert model.g_a.analysis_transform[0].weight.grad is not None
    assert "forward" not in "".join(model.state_dict())  # keys unchanged
    amp.enabled = False
    with torch.no_grad():
        assert model.g_s(torch.zeros(1, 48, 4, 4)).dtype == torch.float32


def test_config_validation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model": "elic-small", "lamda": 0.01}))
    with pytest.raises(ConfigError, match="unknown keys"):
        tconfig.load_train_config(str(bad))
    with pytest.raises(ConfigError):
        tconfig.load_train_config("no-such-config")


def test_eval_source_is_refused_in_a_run(tmp_path: Path) -> None:
    cfg_path = _write_config(tmp_path, TINY_ELIC, k_P=0.0)
    kodak = tmp_path / "data" / "kodak"
    shutil.copytree(tmp_path / "data" / "photos", kodak)
    cfg = tconfig.load_train_config(str(cfg_path), {"sources": [{"type": "folder", "root": "kodak"}]})
    with pytest.raises(tdata.EvalDataError):
        tengine.train(cfg, tmp_path / "out")
    cfg = tconfig.load_train_config(str(cfg_path), {"eval_images": ["kodak/im3.png"]})
    with pytest.raises(tdata.EvalDataError):
        tengine.train(cfg, tmp_path / "out2")


# --------------------------------------------------------------------------------------------
# End-to-end: CLI run, checkpoint reload, real bitstream, resume, DDP
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_step_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("run")
    cfg = _write_config(tmp, TINY_TACO)
    out = tmp / "out"
    _run_cli(["--config", str(cfg), "--out", str(out)])
    return cfg, out


def test_two_step_run_writes_checkpoint_and_logs(two_step_run: tuple[Path, Path]) -> None:
    _, out = two_step_run
    for name in ("state.pt", "taco-test.safetensors", "model_config.json", "log.csv",
                 "eval.csv", "train.log", "train_config.json", "text_states_minilm.pt"):
        assert (out / name).is_file(), name
    state = tcheckpoint.load_state(out / "state.pt")  # weights_only=True
    assert state["step"] == 2
    assert set(state) >= {"model", "optimizer", "aux_optimizer", "schedule", "rng", "train_seconds"}
    rows = (out / "log.csv").read_text().strip().splitlines()
    assert rows[0].split(",")[:4] == ["step", "lmbda", "loss", "bpp"] and len(rows) == 3
    assert all(math.isfinite(float(r.split(",")[2])) for r in rows[1:])
    ev = (out / "eval.csv").read_text().strip().splitlines()
    assert len(ev) == 1 + 2 * 2  # one image at two λ, plus a MEAN row per λ
    # the held-out image never entered training
    log = (out / "train.log").read_text()
    assert "5 samples" in log


def test_checkpoint_reloads_and_codes_a_real_bitstream(two_step_run: tuple[Path, Path]) -> None:
    from app.models.factory import create_model, load_weights
    from app.text import get_text_encoder

    _, out = two_step_run
    model = load_weights(create_model(TINY_TACO), out / "taco-test.safetensors")
    state = tcheckpoint.load_state(out / "state.pt")
    for k, v in model.state_dict().items():
        if v.numel() and not k.endswith(("_quantized_cdf", "_offset", "_cdf_length", "scale_table")):
            assert torch.equal(v, state["model"][k]), k
    text = get_text_encoder("minilm").encode(["a test image"])
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        enc = model.compress(x, text=text, lmbda=0.01)
        dec = model.decompress(enc["strings"], enc["shape"], lmbda=0.01)
    assert dec["x_hat"].shape == (1, 3, 64, 64)
    assert sum(len(s) for g in enc["strings"] for s in g) > 0


def test_resume_continues_exactly(two_step_run: tuple[Path, Path], tmp_path: Path) -> None:
    cfg, first = two_step_run
    resumed = tmp_path / "resumed"
    shutil.copytree(first, resumed)
    common = ["--set", "eval_at_end=false", "--set", "save_every_steps=0"]
    assert tcli.main(["--config", str(cfg), "--out", str(resumed), "--resume",
                       "--max-steps", "3", *common]) == 0
    state = tcheckpoint.load_state(resumed / "state.pt")
    assert state["step"] == 3
    steps = [int(r.split(",")[0]) for r in (resumed / "log.csv").read_text().splitlines()[1:]]
    assert steps == [1, 2, 3]
    assert "resume: step 2" in (resumed / "train.log").read_text()
    straight = tmp_path / "straight"
    assert tcli.main(["--config", str(cfg), "--out", str(straight), "--max-steps", "3",
                       *common]) == 0
    ref = tcheckpoint.load_state(straight / "state.pt")
    for k, v in ref["model"].items():
        assert torch.equal(v, state["model"][k]), k


def test_joint_clip_loss_in_a_training_step(tmp_path: Path) -> None:
    """k_J > 0 with the tiny random open_clip: the joint term is computed and logged."""
    cfg_path = _write_config(tmp_path, TINY_TACO, k_P=0.0, k_J=0.01, clip_tiny_random=True,
                             max_steps=1, eval_images=[], save_every_steps=0, batch_size=3)
    out = tmp_path / "joint"
    assert tcli.main(["--config", str(cfg_path), "--out", str(out)]) == 0
    header, row = (out / "log.csv").read_text().strip().splitlines()[:2]
    joint = float(row.split(",")[header.split(",").index("joint")])
    assert math.isfinite(joint) and joint > 0
    assert "joint loss: tiny random CLIP" in (out / "train.log").read_text()


def test_joint_loss_falls_back_to_zero_without_clip(tmp_path: Path) -> None:
    cfg_path = _write_config(tmp_path, TINY_ELIC, k_P=0.0, k_J=0.01, max_steps=1, eval_images=[],
                             clip_checkpoint=str(tmp_path / "absent.pt"), save_every_steps=0)
    out = tmp_path / "nojoint"
    assert tcli.main(["--config", str(cfg_path), "--out", str(out)]) == 0
    assert "training with k_J = 0" in (out / "train.log").read_text()


@pytest.mark.slow
def test_ddp_two_ranks_gloo(tmp_path: Path) -> None:
    cfg = _write_config(tmp_path, TINY_ELIC, k_P=0.0, eval_at_end=False)
    out = tmp_path / "ddp"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "app", "train", "--config", str(cfg), "--out", str(out), "--threads", "1"],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "state.pt").is_file()
    check = json.loads((out / "ddp_check.json").read_text())
    assert check["world"] == 2 and check["agree"] and check["step"] == 2
    assert len(set(check["checksums"])) == 1


# --------------------------------------------------------------------------------------------
# Shipped training configs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["elic-small", "taco-small", "tiny-smoke", "elic-small-continue",
                                  "taco-small-identity"])
def test_shipped_configs_are_valid(name: str) -> None:
    cfg = tconfig.load_train_config(name)
    mcfg = tconfig.build_model_config(cfg)
    assert mcfg["arch"] in ("elic", "taco")
    for src in cfg["sources"]:
        for key in ("root", "images"):
            if key in src:
                assert Path(src[key]).name.casefold() not in tdata.FORBIDDEN_DIR_NAMES
    for item in cfg["eval_images"]:
        assert not set(p.casefold() for p in Path(item).parts) & tdata.FORBIDDEN_DIR_NAMES
    if mcfg.get("variable_rate"):
        lo, hi = cfg["lmbda_range"] or mcfg["lmbda_range"]
        assert mcfg["lmbda_range"][0] <= lo < hi <= mcfg["lmbda_range"][1]


@pytest.mark.shared
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is absent")
@pytest.mark.parametrize("name", ["elic-small", "taco-small", "tiny-smoke", "elic-small-continue",
                                  "taco-small-identity"])
def test_shipped_configs_find_their_data(name: str) -> None:
    cfg = tconfig.load_train_config(name)
    root = tconfig.data_root_of(cfg)
    exclude = [root / p for p in cfg["eval_images"]]
    recs = tdata.records_from_sources(cfg["sources"], data_root=root, exclude=exclude)
    assert len(recs) > 100 if name != "tiny-smoke" else len(recs) > 0
    resolved = {r.path.resolve() for r in recs}
    for p in exclude:
        assert p.is_file() and p.resolve() not in resolved


def test_lmbda_bounds() -> None:
    assert tschedule.lmbda_bounds({"lmbda_range": None}, TINY_TACO) == (0.002, 0.05)
    assert tschedule.lmbda_bounds({"lmbda_range": [0.004, 0.02]}, TINY_TACO) == (0.004, 0.02)
    with pytest.raises(ConfigError, match="exceeds"):
        tschedule.lmbda_bounds({"lmbda_range": [0.001, 0.02]}, TINY_TACO)
    fixed = {**TINY_ELIC, "variable_rate": False, "lmbda_ladder": [0.013]}
    assert tschedule.lmbda_bounds({"lmbda": None}, fixed) == (0.013, 0.013)
    assert tschedule.lmbda_bounds({"lmbda": 0.005}, fixed) == (0.005, 0.005)


def test_init_from_safetensors_in_a_run(tmp_path: Path) -> None:
    from app.models.factory import create_model, save_weights

    torch.manual_seed(1)
    elic = create_model(TINY_ELIC)
    save_weights(elic, tmp_path / "elic.safetensors")
    cfg_path = _write_config(tmp_path, TINY_TACO, k_P=0.0, max_steps=1, eval_images=[],
                             save_every_steps=0, init_from=str(tmp_path / "elic.safetensors"),
                             lr=0.0, aux_lr=0.0)
    out = tmp_path / "taco"
    assert tcli.main(["--config", str(cfg_path), "--out", str(out)]) == 0
    log = (out / "train.log").read_text()
    assert "g_a remapped ELIC->TACO: True" in log and "0 shape mismatches" in log
    taco = tcheckpoint.load_state(out / "state.pt")["model"]
    ref = elic.state_dict()
    # lr 0: the copied weights are unchanged after the step
    assert torch.equal(taco["g_a.analysis_transform.16.weight"], ref["g_a.analysis_transform.13.weight"])
    for k, v in ref.items():
        if not k.startswith("g_a.") and v.is_floating_point() and v.numel():
            assert torch.equal(taco[k], v), k


def test_time_budget_ends_cleanly_with_a_checkpoint(tmp_path: Path) -> None:
    cfg_path = _write_config(tmp_path, TINY_ELIC, k_P=0.0, max_steps=1000, eval_images=[],
                             save_every_steps=0)
    out = tmp_path / "budget"
    assert tcli.main(["--config", str(cfg_path), "--out", str(out), "--max-minutes", "0.0001"]) == 0
    assert "(max_minutes)" in (out / "train.log").read_text()
    state = tcheckpoint.load_state(out / "state.pt")
    assert state["step"] < 1000 and state["train_seconds"] > 0
    assert (out / "elic-test.safetensors").is_file()


def test_ship_checkpoint_keeps_shipped_phases_and_drops_stale_kodak(tmp_path: Path) -> None:
    import importlib.util

    from app.models.factory import create_model

    spec = importlib.util.spec_from_file_location(
        "ship_checkpoint", Path(__file__).resolve().parents[1] / "scripts" / "ship_checkpoint.py")
    ship = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(ship)

    run = tmp_path / "runs" / "elic-next"
    run.mkdir(parents=True)
    torch.manual_seed(0)
    model = create_model("elic-tiny")
    torch.save({"step": 40, "train_seconds": 90.0, "model": model.state_dict()}, run / "state.pt")
    (run / "train_config.json").write_text(json.dumps(
        {"model": "elic-tiny", "init_from": "checkpoints/elic-tiny.safetensors", "lr": 3e-4,
         "lr_milestones": [0.8], "k_P": 0.0}))
    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    old_phases = [{"run": "a", "steps": 100, "minutes": 2.0}, {"run": "b", "steps": 50, "minutes": 1.0}]
    (ckpt / "manifest.json").write_text(json.dumps(
        {"elic-tiny": {"sha256": "old", "steps": 150, "phases": old_phases, "kodak": {"elic": []}}}))
    assert ship.main([str(run), "--hardware", "test", "--prior-manifest", "elic-tiny",
                      "--checkpoints", str(ckpt)]) == 0
    entry = json.loads((ckpt / "manifest.json").read_text())["elic-tiny"]
    assert [p["run"] for p in entry["phases"]] == ["a", "b", "elic-next"]
    assert entry["steps"] == 190 and entry["train_minutes"] == pytest.approx(4.5)
    assert entry["phases"][-1]["init_from"] == "checkpoints/elic-tiny.safetensors"
    assert "kodak" not in entry  # measured with other weights
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"codecs": {"elic": [{"rate": "0.0018", "bpp": 0.2}]}}))
    assert ship.main([str(run), "--hardware", "test", "--attach-kodak", "--kodak-json", str(summary),
                      "--checkpoints", str(ckpt)]) == 0
    entry2 = json.loads((ckpt / "manifest.json").read_text())["elic-tiny"]
    assert entry2["kodak"] == {"elic": [{"rate": "0.0018", "bpp": 0.2}]}
    assert entry2["phases"] == entry["phases"] and entry2["sha256"] == entry["sha256"]
    # an entry without phases counts as one phase
    assert ship.prior_manifest_phases({"m": {"steps": 7, "train_minutes": 1.5, "sha256": "ab"}},
                                      "m")[0]["steps"] == 7


def test_gain_tables_regridded_onto_an_extended_ladder() -> None:
    from app.models.factory import create_model

    base = {**TINY_ELIC, "variable_rate": True, "lmbda_ladder": [0.002, 0.01, 0.05],
            "lmbda_range": [0.002, 0.05]}
    longer = {**base, "lmbda_ladder": [0.002, 0.01, 0.05, 0.25], "lmbda_range": [0.002, 0.25]}
    torch.manual_seed(0)
    src = create_model(base)
    with torch.no_grad():  # a "trained" table: not the initial sqrt(λ) rule
        src.gain.mul_(torch.rand_like(src.gain) + 0.5)
        src.inv_gain.mul_(torch.rand_like(src.inv_gain) + 0.5)
    dst = create_model(longer)
    rep = twarmstart.init_from_weights(dst, src.state_dict(), "none", src_ladder=base["lmbda_ladder"])
    assert rep["gains_regridded"] == ["gain", "inv_gain"] and not rep["mismatched"]
    assert dst.gain.shape == (4, src.gain.shape[1])
    assert torch.allclose(dst.gain[:3], src.gain.abs(), rtol=1e-5)
    # the new top row continues the log-linear trend of the two trained top rows
    expect = src.gain[2].abs() * (src.gain[2].abs() / src.gain[1].abs())
    assert torch.allclose(dst.gain[3], expect, rtol=1e-4)
    # any λ of the old range gets exactly the old gain
    for lam in (0.002, 0.004, 0.03, 0.05):
        g_old, _ = src._gains(lam, 1)
        g_new, _ = dst._gains(lam, 1)
        assert torch.allclose(g_old, g_new, rtol=1e-5)
    # same ladder: nothing regridded
    rep2 = twarmstart.init_from_weights(create_model(base), src.state_dict(), "none",
                                   src_ladder=base["lmbda_ladder"])
    assert rep2["gains_regridded"] == []


def test_resolve_auto_picks_the_fastest_measured_setting() -> None:
    def fake(cfg, threads, steps, rounds, log):
        table = {("fp32", 1): 0.9, ("bf16+channels_last", 1): 9.7, ("fp32", 2): 0.6,
                 ("bf16+channels_last", 2): 5.3}
        return [{"mode": m, "threads": t, "median_s": table[(m, t)]} for m in ("fp32", "bf16+channels_last")
                for t in threads]

    lines: list[str] = []
    cfg = {"bf16": "auto", "threads": "auto", "channels_last": True}
    best = tautotune.resolve_auto(cfg, lines.append, profiler=fake)
    cores = len(os.sched_getaffinity(0))
    assert cfg["bf16"] is False and cfg["channels_last"] is False
    assert cfg["threads"] == (2 if cores >= 2 else 1) and best is not None
    assert any("auto: chose bf16=False" in line for line in lines)
    assert cfg["_auto_profile"]["chosen"] == {"bf16": False, "threads": cfg["threads"]}
    fixed = {"bf16": True, "threads": "auto", "channels_last": True}  # only threads measured
    tautotune.resolve_auto(fixed, lines.append, profiler=fake)
    assert fixed["bf16"] is True and fixed["threads"] == (2 if cores >= 2 else 1)
    assert tautotune.resolve_auto({"bf16": True, "threads": 1}, lines.append, profiler=fake) is None


def test_auto_precision_and_threads_in_a_run(tmp_path: Path) -> None:
    cfg_path = _write_config(tmp_path, TINY_ELIC, k_P=0.0, max_steps=1, eval_images=[],
                             bf16="auto", threads="auto", per_sample_lmbda=True,
                             lmbda_sampling="power", lr_warmup_steps=5)
    out = tmp_path / "auto"
    assert tcli.main(["--config", str(cfg_path), "--out", str(out)]) == 0
    text = (out / "train.log").read_text()
    assert "auto profile: fp32" in text and "auto: chose bf16=" in text
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["bf16"] in (True, False) and isinstance(saved["threads"], int)
    assert saved["_auto_profile"]["chosen"]["threads"] == saved["threads"]
