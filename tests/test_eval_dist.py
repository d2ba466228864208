"""Sharded evaluation (torchrun ranks, gloo on CPU), resume after a kill, and caption policies."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fakes import JpegLearned
from PIL import Image

from app.errors import ConfigError
from app.eval import captions as eval_captions
from app.eval import cli, runner, schema
from app.eval import distributed as eval_dist

ROOT = Path(__file__).resolve().parents[1]
TIMING = ("encode_ms", "decode_ms")


def _images(folder: Path, sizes=((64, 64), (48, 80), (64, 96))) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:96, 0:96].astype(np.float64)
    base = np.stack([128 + 90 * np.sin(xx / 9), 128 + 80 * np.cos(yy / 7), (xx + yy) % 256], -1)
    for i, (h, w) in enumerate(sizes):
        img = np.clip(base[:h, :w] + rng.normal(0, 10, (h, w, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"im{i}.png")
    return folder


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _untimed(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def _summary_untimed(path: Path) -> dict:
    s = json.loads(path.read_text())
    s.pop("command")
    for points in s["codecs"].values():
        for p in points:
            for k in TIMING:
                p.pop(k)
    return s


def _torchrun(args: list[str], env_extra: dict[str, str], script: list[str] | None = None,
              timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "TACO_ALLOW_RANDOM": "1", "OMP_NUM_THREADS": "1", **env_extra}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           *(script or ["-m", "app", "eval"]), *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


# --------------------------------------------------------------------------- units


def test_shard_split_is_deterministic_disjoint_and_complete():
    units = list(range(11))
    parts = [eval_dist.shard(units, r, 3) for r in range(3)]
    assert parts == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8]]
    assert sorted(sum(parts, [])) == units
    assert eval_dist.shard(units, 0, 1) == units
    with pytest.raises(ConfigError):
        eval_dist.shard(units, 3, 3)


def test_env_info_reads_the_launcher_variables():
    assert eval_dist.env_info({}) == eval_dist.DistInfo(0, 1, 0)
    info = eval_dist.env_info({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (info.rank, info.world, info.local_rank, info.main, info.enabled) == (3, 4, 1, False, True)
    for bad in ({"RANK": "4", "WORLD_SIZE": "4"}, {"WORLD_SIZE": "x"}):
        with pytest.raises(ConfigError):
            eval_dist.env_info(bad)


def test_init_without_a_launcher_starts_nothing(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert eval_dist.init("cpu") == eval_dist.DistInfo()
    assert not torch.distributed.is_initialized()
    with pytest.raises(ConfigError):
        eval_dist.init("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            eval_dist.init("cuda")


def _scored(**cells: str) -> schema.Row:
    """A row with these cells, every other cell of the ``best-of`` header "0"."""
    return schema.Row.from_cells({**dict.fromkeys(schema.csv_columns("best-of"), "0"), **cells})


def test_pick_best_starts_at_infinity():
    rows = [_scored(lpips="0.30"), _scored(lpips="0.10"), _scored(lpips="0.10"), _scored(lpips="")]
    assert eval_captions.pick_best(rows) == 1  # lowest, first on ties, empty never wins
    assert eval_captions.pick_best([_scored(lpips=""), _scored(lpips="0.9")]) == 1
    assert eval_captions.pick_best([_scored(lpips="0.5", lpips_paper="0.1"),
                                    _scored(lpips="0.2", lpips_paper="0.4")], "lpips_paper") == 0


def test_policy_captions():
    files = [Path("a.png"), Path("b.png"), Path("c.png")]
    caps = {"a.png": ["a1", "a2"], "b": "b1"}
    lists = {k: v if isinstance(v, list) else [v] for k, v in caps.items()}
    assert eval_captions.policy_captions("given", files, lists) == {"a.png": ["a1"], "b.png": ["b1"], "c.png": [""]}
    assert eval_captions.policy_captions("each", files, lists)["a.png"] == ["a1", "a2"]
    assert eval_captions.policy_captions("other", files, lists) == {"a.png": ["b1"], "b.png": [""], "c.png": ["a1"]}
    assert eval_captions.policy_captions("empty", files, lists)["a.png"] == [""]


# --------------------------------------------------------------------------- best-of


class _CaptionQualityCodec(JpegLearned):
    """JPEG whose quality is chosen by the caption: a case with a known best caption."""

    QUALITY = {"blurry words": 5, "the right words": 95, "middling words": 40}

    def __init__(self) -> None:
        super().__init__([1.0])

    def quality_for(self, caption: str, lmbda: float | None) -> float | None:
        return self.QUALITY.get(caption, 20)


@pytest.fixture()
def fake_codec(monkeypatch):
    # MS-SSIM of these small images runs at 256 px and takes most of the time; nothing here
    # tests it, so a stand-in keeps the logic tests fast
    import app.metrics

    monkeypatch.setattr(app.metrics, "ms_ssim", lambda a, b: float(np.mean(a == b)))
    fake = _CaptionQualityCodec()
    monkeypatch.setattr(app.codecs, "load_codec", lambda name, checkpoint=None, device="cpu": fake)
    return fake


def test_best_of_keeps_the_lowest_lpips_caption(tmp_path, fake_codec):
    images = _images(tmp_path / "imgs", sizes=((64, 64), (48, 80)))
    caps = tmp_path / "caps.json"
    caps.write_text(json.dumps({"im0.png": ["blurry words", "the right words", "middling words"],
                                "im1.png": ["middling words", "blurry words"]}))
    res = runner.run_eval(images, ["fake", "jpeg"], tmp_path / "best", {"jpeg": [50]}, captions=caps,
                            progress=False, caption_mode="best-of")
    rows = _rows(res.csv_path)
    got = {(r["image"], r["codec"]): r["caption"] for r in rows}
    assert got == {("im0.png", "fake"): "1", ("im1.png", "fake"): "0",  # q95, then q40 beats q5
                   ("im0.png", "jpeg"): "0", ("im1.png", "jpeg"): "0"}  # captions ignored: once
    assert fake_codec.captions == ["blurry words", "the right words", "middling words",
                                   "middling words", "blurry words"]
    each = runner.run_eval(images, ["fake"], tmp_path / "each", captions=caps, progress=False,
                             caption_mode="each")
    each_rows = _rows(each.csv_path)
    assert [(r["image"], r["caption"]) for r in each_rows] == [
        ("im0.png", "0"), ("im0.png", "1"), ("im0.png", "2"), ("im1.png", "0"), ("im1.png", "1")]
    by = {(r["image"], r["caption"]): float(r["lpips"]) for r in each_rows}
    assert float(rows[0]["lpips"]) == pytest.approx(min(by[("im0.png", c)] for c in "012"))
    assert each.summary["fake"][0]["n"] == 5
    report = res.report_path.read_text()
    assert "Caption policy of every table below: **best-of" in report
    assert "Means per codec and rate (captions: best-of)" in report
    assert json.loads(res.summary_path.read_text())["best_of_select_by"] == "lpips"


# --------------------------------------------------------------------------- sharding


def test_sharded_ranks_in_turn_match_one_process(tmp_path, monkeypatch, fake_codec):
    """The shard / fold / merge logic without a process group: rank 1 runs, then rank 0."""
    images = _images(tmp_path / "imgs")
    caps = tmp_path / "caps.json"
    caps.write_text(json.dumps({"im0.png": ["the right words", "blurry words"], "im2": "middling words"}))
    run = dict(rates={"jpeg": [30, 70]}, captions=caps, progress=False, caption_mode="each")
    single = runner.run_eval(images, ["fake", "jpeg"], tmp_path / "one", **run)
    monkeypatch.setattr(eval_dist, "barrier", lambda info: None)
    out = tmp_path / "two"
    r1 = runner.run_eval(images, ["fake", "jpeg"], out, dist=eval_dist.DistInfo(1, 2), **run)
    assert r1.summary == {} and (out / "shards" / "rank00001.csv").exists()
    r0 = runner.run_eval(images, ["fake", "jpeg"], out, dist=eval_dist.DistInfo(0, 2), **run)
    # 10 units: fake once per caption (2 + 1 + 1), jpeg once per image and rate (captions
    # ignored). Rank 1 ran first, so rank 0 folded its shard into results.csv before its own 5
    assert (r1.computed, r0.computed, r0.skipped) == (5, 5, 5)
    assert [r["caption"] for r in _rows(out / "results.csv") if r["image"] == "im0.png"] == ["0", "1", "0", "0"]
    assert _untimed(_rows(out / "results.csv")) == _untimed(_rows(single.csv_path))
    assert _summary_untimed(r0.summary_path) == _summary_untimed(single.summary_path)
    assert not (out / "shards").exists()


@pytest.mark.slow
def test_two_process_gloo_run_gives_the_rows_of_one_process(tmp_path, monkeypatch):
    images = _images(tmp_path / "imgs")
    caps = tmp_path / "caps.json"
    caps.write_text(json.dumps({"im0.png": ["a red car", "a blue boat"], "im1": "a dog"}))
    args = ["--images", str(images), "--captions", str(caps), "--caption-mode", "each",
            "--codecs", "taco-tiny,jpeg", "--rates", "taco-tiny=0.004", "--rates", "jpeg=50",
            "--no-progress", "--plotlyjs", "cdn"]
    two = tmp_path / "two"
    proc = _torchrun([*args, "--out", str(two)], {})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "rank 1: 3 measured, 0 reused" in proc.stdout  # 7 units: taco-tiny 2 + 1 + 1, jpeg 3
    assert "7 measured, 0 reused" in proc.stdout

    monkeypatch.setenv("TACO_ALLOW_RANDOM", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun worker (OMP_NUM_THREADS=1): same float sums
    try:
        one = tmp_path / "one"
        assert cli.main([*args, "--out", str(one)]) == 0
    finally:
        torch.set_num_threads(threads)
    rows = _rows(two / "results.csv")
    assert len(rows) == 7 and _untimed(rows) == _untimed(_rows(one / "results.csv"))
    assert _summary_untimed(two / "summary.json") == _summary_untimed(one / "summary.json")
    assert not (two / "shards").exists()


@pytest.mark.slow
def test_killed_sharded_run_resumes_without_losing_or_duplicating(tmp_path):
    images = _images(tmp_path / "imgs", sizes=((40, 48),) * 5)
    out = tmp_path / "out"
    args = ["--images", str(images), "--codecs", "jpeg,webp", "--rates", "20,60", "--out", str(out),
            "--no-progress", "--plotlyjs", "cdn"]
    proc = _torchrun(args, {"TACO_TEST_DIE_RANK": "1", "TACO_TEST_DIE_AFTER": "3"},
                     script=[str(ROOT / "tests" / "eval_dist_worker.py")])
    assert proc.returncode != 0  # rank 1 died; the launcher stopped rank 0
    shard1 = (out / "shards" / "rank00001.csv").read_text()
    assert len(shard1.splitlines()) == 1 + 3 + 1 and not shard1.endswith("\n")  # 3 rows + half a line
    survived = {(r.image, r.codec, r.rate_key)
                for p in (out / "shards").glob("*.csv") for r in schema.read_rows(p)}
    assert len(survived) >= 3

    again = _torchrun(args, {})  # the same launch again, no one dies
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    assert f"{20 - len(survived)} measured, {len(survived)} reused" in again.stdout
    rows = _rows(out / "results.csv")
    keys = [(r["image"], r["codec"], r["rate"]) for r in rows]
    assert len(keys) == len(set(keys)) == 5 * 2 * 2
    assert survived <= set(keys) and all(r["bytes"] and r["lpips"] for r in rows)
    assert not (out / "shards").exists()


def test_help_names_the_policies_and_the_released_scripts_bug(capsys):
    with pytest.raises(SystemExit):
        cli.setup_args().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "{given,each,best-of,empty,other}" in text
    assert "starts the best LPIPS at 0.0" in text and "torchrun --nproc_per_node N" in text
    assert schema.csv_columns("each")[-1] == "caption" == schema.csv_columns("best-of")[-1]
    assert schema.csv_columns("given") == schema.CSV_COLUMNS
