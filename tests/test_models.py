"""ELIC / TACO models on tiny configs: configs, forward, real coding, gain units, adapter, weights I/O."""

from __future__ import annotations

import collections
import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from app.errors import BitstreamError, ConfigError, MissingModelError
from app.models import (
    ELIC,
    TACO,
    create_model,
    list_configs,
    load_config,
    load_official_checkpoint,
    load_weights,
    read_weights_metadata,
    save_weights,
    validate_config,
)
from app.models import elic as elic_module
from app.models.gain import interpolate_gain
from app.models.layers import ANCHOR, NONANCHOR, checkerboard_mask, squeeze_half, unsqueeze_half

TEXT_DIM = 384


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Any:
    """One intra-op thread, coding included: tiny models gain nothing from more threads, and
    two threads on a loaded 2-core box are many times slower than one."""
    before, coding_before = torch.get_num_threads(), elic_module.CODING_THREADS
    torch.set_num_threads(1)
    elic_module.CODING_THREADS = 1
    yield
    torch.set_num_threads(before)
    elic_module.CODING_THREADS = coding_before


def _model(name: str, seed: int = 0) -> ELIC:
    torch.manual_seed(seed)
    model = create_model(name)
    model.eval()
    model.update(force=True)
    return model


def _inputs(
    h: int = 64, w: int = 128, batch: int = 1, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand((batch, 3, h, w), generator=gen)
    text = torch.randn((batch, 38, TEXT_DIM), generator=gen)
    return x, text


@pytest.fixture(scope="module")
def taco() -> TACO:
    model = _model("taco-tiny")
    with torch.no_grad():  # make the text path active (trained init is gamma = 0)
        for block in ("injector1", "injector2"):
            model.adapter(block).gamma.fill_(0.5)
    return model


@pytest.fixture(scope="module")
def elic() -> ELIC:
    return _model("elic-tiny")


# --------------------------------------------------------------------------- configs
def test_shipped_configs() -> None:
    names = list_configs()
    for name in (
        "taco-official",
        "elic-official",
        "taco-small",
        "elic-small",
        "taco-tiny",
        "elic-tiny",
    ):
        assert name in names
        cfg = load_config(name)
        assert cfg["name"] == name
        assert sum(cfg["slices"]) == cfg["M"]
    for name in ("taco-official", "elic-official"):
        cfg = load_config(name)
        assert (
            cfg["variable_rate"] is False
            and cfg["text_dim"] == 512
            and cfg["text_encoder"] == "clip"
        )
        assert (cfg["N"], cfg["M"], cfg["slices"]) == (192, 320, [16, 16, 32, 64, 192])
        assert cfg["ctx_hidden"] == [224, 128] and cfg["hyper_out"] == 640
    for name in ("taco-small", "elic-small"):
        cfg = load_config(name)
        assert (
            cfg["variable_rate"] is True
            and cfg["text_dim"] == 384
            and cfg["text_encoder"] == "minilm"
        )
        ladder = cfg["lmbda_ladder"]
        ratios = [b / a for a, b in zip(ladder, ladder[1:], strict=False)]
        assert max(ratios) / min(ratios) < 1.01  # log-spaced


def test_load_config_from_path(tmp_path: Path) -> None:
    cfg = load_config("elic-tiny")
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({**cfg, "name": "mine"}))
    assert load_config(path)["name"] == "mine"


@pytest.mark.parametrize(
    "change",
    [
        {"slices": [2, 2, 4, 8, 15]},
        {"arch": "vit"},
        {"N": 0},
        {"ctx_hidden": [16]},
        {"text_encoder": "bert"},
        {"lmbda_ladder": [0.01, 0.005]},
        {"lmbda_ladder": [0.002, 0.0483]},  # does not start at lmbda_range[0]
        {"heads": 5},
    ],
)
def test_invalid_configs_raise_config_error(change: dict[str, Any]) -> None:
    cfg = {**load_config("taco-tiny"), **change}
    with pytest.raises(ConfigError):
        validate_config(cfg)


def test_unknown_config_name() -> None:
    with pytest.raises(ConfigError, match="available"):
        load_config("no-such-model")


# --------------------------------------------------------------------------- checkerboard
def test_checkerboard_squeeze_roundtrip_and_parity() -> None:
    t = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).view(2, 3, 4, 6) + 1
    anchor = checkerboard_mask(4, 6, ANCHOR)
    assert not anchor[0, 0, 0, 0] and anchor[0, 0, 0, 1] and anchor[0, 0, 1, 0]
    a, n = squeeze_half(t, ANCHOR), squeeze_half(t, NONANCHOR)
    assert a.shape == (2, 3, 4, 3)
    assert torch.equal(a[0, 0, 0], t[0, 0, 0, 1::2]) and torch.equal(a[0, 0, 1], t[0, 0, 1, 0::2])
    assert torch.equal(a.flatten(), t[:, :, anchor[0, 0]].flatten())  # C-order symbol order
    assert torch.equal(unsqueeze_half(a, ANCHOR) + unsqueeze_half(n, NONANCHOR), t)
    assert torch.equal(unsqueeze_half(a, ANCHOR), torch.where(anchor, t, 0.0))


# --------------------------------------------------------------------------- forward / coding
def test_train_forward_shapes_and_gradients() -> None:
    model = create_model("taco-tiny")
    model.train()
    x, text = _inputs(batch=2)
    lam = torch.tensor([0.002, 0.04])
    out = model(x, text, lmbda=lam)
    assert out["x_hat"].shape == x.shape
    assert out["likelihoods"]["y"].shape == (2, 32, 4, 8)
    assert out["likelihoods"]["z"].shape == (2, 16, 1, 2)
    bpp = sum(-lk.log2().sum() for lk in out["likelihoods"].values()) / (2 * 64 * 128)
    loss = bpp + ((out["x_hat"] - x) ** 2).mean() * 100
    loss.backward()
    named = dict(model.named_parameters())
    for key in (
        "g_a.analysis_transform.0.weight",
        "gain",
        "inv_gain",
        "g_s.synthesis_transform.14.weight",
        "entropy_parameters_nonanchor.4.fusion.0.weight",
        "channel_context.4.fushion.0.weight",
        "g_a.analysis_transform.8.gamma",
        "g_a.analysis_transform.15.gamma",
        "local_context.0.weight",
    ):
        grad = named[key].grad
        assert grad is not None and bool(grad.abs().sum() > 0), key
    assert model.aux_loss().item() > 0


def test_bf16_transform_autocast_trains_and_eval_stays_fp32() -> None:
    model = create_model("taco-tiny")
    model.transform_dtype = torch.bfloat16
    model.train()
    x, text = _inputs()
    out = model(x, text, lmbda=0.01)
    assert out["x_hat"].dtype == out["likelihoods"]["y"].dtype == torch.float32
    bpp = sum(-lk.log2().sum() for lk in out["likelihoods"].values()) / (64 * 128)
    (bpp + ((out["x_hat"] - x) ** 2).mean()).backward()
    assert torch.isfinite(model.g_a.analysis_transform[0].weight.grad).all()
    model.eval()
    model.update(force=True)
    with torch.no_grad():
        ref = model(x, text, lmbda=0.01)["x_hat"]
    enc = model.compress(x, text, lmbda=0.01, coding="float")
    dec = model.decompress(enc["strings"], enc["shape"], lmbda=0.01, coding="float")
    assert torch.equal(dec["x_hat"], ref)


@pytest.mark.parametrize("coding", ["float", "portable"])
@pytest.mark.parametrize("which", ["taco", "elic"])
@pytest.mark.parametrize("size", [(64, 128), (128, 64)])
def test_compress_decompress_matches_eval_forward(
    which: str, size: tuple[int, int], coding: str, request: pytest.FixtureRequest
) -> None:
    model = request.getfixturevalue(which)
    x, text = _inputs(*size)
    text_arg = text if model.uses_text else None
    with torch.no_grad():
        out = model(x, text_arg, lmbda=0.01)
    enc = model.compress(x, text_arg, lmbda=0.01, coding=coding)
    assert enc["shape"] == (size[0] // 64, size[1] // 64)
    assert isinstance(enc["strings"][0][0], bytes) and isinstance(enc["strings"][1][0], bytes)
    dec = model.decompress(enc["strings"], enc["shape"], lmbda=0.01, coding=coding)
    assert dec["symbols_crc"] == enc["symbols_crc"]
    if coding == "float":  # the eval forward is the float path, bit for bit
        assert torch.equal(dec["x_hat"], out["x_hat"])
    else:  # the exact entropy model moves means by ~1e-6: ŷ and x̂ differ only in the last bits
        assert (dec["x_hat"] - out["x_hat"]).abs().max() < 1e-3
    # The real stream costs about what the model estimates (plus rANS/bypass overhead).
    est = sum(-lk.double().log2().sum().item() for lk in out["likelihoods"].values()) / 8
    real = len(enc["strings"][0][0]) + len(enc["strings"][1][0])
    assert 0.8 * est < real < 1.3 * est + 64
    # Deterministic.
    assert model.compress(x, text_arg, lmbda=0.01, coding=coding)["strings"] == enc["strings"]


def test_batch_coding_equals_per_image(taco: TACO) -> None:
    x, text = _inputs(batch=2, seed=3)
    for coding in ("portable", "float"):
        enc = taco.compress(x, text, coding=coding)
        assert len(enc["strings"][0]) == len(enc["strings"][1]) == 2
        for b in range(2):  # per-image exponents: a file never depends on its batch neighbours
            single = taco.compress(x[b : b + 1], text[b : b + 1], coding=coding)
            assert single["strings"] == [[enc["strings"][0][b]], [enc["strings"][1][b]]]
            assert single["symbols_crc"] == [enc["symbols_crc"][b]]
    dec = taco.decompress(enc["strings"], enc["shape"], coding="float")
    with torch.no_grad():
        assert torch.equal(dec["x_hat"], taco(x, text)["x_hat"])


def test_taco_requires_text_and_decoder_is_text_free(taco: TACO) -> None:
    x, text = _inputs()
    with pytest.raises(ValueError, match="text"):
        taco.compress(x)
    with pytest.raises(ValueError, match="text"):
        taco.compress(x, text[:, :, :100])
    enc = taco.compress(x, text)
    other = taco.compress(x, torch.randn_like(text))
    assert enc["strings"] != other["strings"]  # the caption changes the encoding ...
    dec = taco.decompress(enc["strings"], enc["shape"])  # ... but decoding needs no text
    assert dec["x_hat"].shape == x.shape


def test_elic_ignores_text(elic: ELIC) -> None:
    x, text = _inputs()
    assert elic.compress(x, text)["strings"] == elic.compress(x)["strings"]


def test_input_size_checks(elic: ELIC) -> None:
    with pytest.raises(ValueError, match="multiples of 64"):
        elic.compress(torch.rand(1, 3, 64, 100))
    with pytest.raises(ValueError):
        elic.compress(torch.rand(1, 1, 64, 64))


def test_malformed_streams_raise_bitstream_error(elic: ELIC) -> None:
    enc = elic.compress(torch.rand(1, 3, 64, 64))
    y, z = enc["strings"][0][0], enc["strings"][1][0]
    for bad in ([[y[:-2]], [z]], [[b""], [z]], [[y], [z[:5]]]):
        with pytest.raises(BitstreamError):
            elic.decompress(bad, enc["shape"])


def test_compress_needs_update() -> None:
    model = create_model("elic-tiny").eval()
    with pytest.raises(RuntimeError, match="update"):
        model.compress(torch.rand(1, 3, 64, 64))


# --------------------------------------------------------------------------- gain units
def test_gain_interpolation_is_geometric() -> None:
    table = torch.tensor([[1.0, 2.0], [4.0, 8.0], [16.0, 8.0]])
    log_ladder = torch.tensor([0.001, 0.004, 0.016], dtype=torch.float64).log()
    lam = torch.tensor([0.001, 0.002, 0.004, 0.008, 0.016], dtype=torch.float64)
    got = interpolate_gain(table, log_ladder, lam)
    expected = torch.tensor([[1.0, 2.0], [2.0, 4.0], [4.0, 8.0], [8.0, 8.0], [16.0, 8.0]])
    assert torch.allclose(got, expected, rtol=1e-5)


def test_variable_rate_controls_rate() -> None:
    model = _model("elic-tiny")
    lo, hi = model.cfg["lmbda_range"]
    assert model.gain.shape == model.inv_gain.shape == (3, 32)
    assert model.default_lmbda == pytest.approx(math.sqrt(lo * hi))
    x, _ = _inputs(128, 128, seed=5)
    sizes = []
    for lam in (lo, math.sqrt(lo * hi) / 1.3, hi):
        enc = model.compress(x, lmbda=lam, coding="float")
        sizes.append(len(enc["strings"][0][0]))
        dec = model.decompress(enc["strings"], enc["shape"], lmbda=lam, coding="float")
        with torch.no_grad():
            assert torch.equal(dec["x_hat"], model(x, lmbda=lam)["x_hat"])
    assert sizes[0] < sizes[1] < sizes[2]
    for bad in (lo / 2, hi * 2):
        with pytest.raises(ConfigError, match="outside"):
            model.compress(x, lmbda=bad)


def test_official_configs_have_no_gain() -> None:
    cfg = {
        **load_config("elic-official"),
        "N": 16,
        "M": 32,
        "slices": [2, 2, 4, 8, 16],
        "hyper_out": 64,
    }
    model = create_model(cfg)
    assert not model.variable_rate and model.default_lmbda is None
    assert "gain" not in model.state_dict()


# --------------------------------------------------------------------------- adapter
def test_attention_maps(taco: TACO) -> None:
    x, text = _inputs(64, 128)
    assert taco.attention_maps() == {}
    taco.keep_attention(True)
    try:
        taco.compress(x, text)
        maps = taco.attention_maps()
    finally:
        taco.keep_attention(False)
    assert maps["injector1"].shape == (1, 38, 16, 32)
    assert maps["injector2"].shape == (1, 38, 8, 16)
    assert maps["extractor"].shape == (1, 38, 8, 16)
    assert torch.allclose(maps["injector1"].sum(dim=1), torch.ones(1, 16, 32), atol=1e-5)
    assert torch.allclose(maps["extractor"].sum(dim=(2, 3)), torch.ones(1, 38), atol=1e-5)
    assert taco.attention_maps() == {}


def test_gamma_zero_still_layernorms_image_tokens() -> None:
    """Quirk 1: with gamma = 0 the Injector returns the LayerNormed image, not the input."""
    model = create_model("taco-tiny").eval()
    block = model.adapter("injector1")
    feat = torch.randn(1, 16, 4, 4) * 3 + 1
    out = block(feat, torch.randn(1, 38, TEXT_DIM))
    tokens = feat.flatten(2).transpose(1, 2)
    expected = block.image_norm(tokens).transpose(1, 2).reshape(feat.shape)
    assert torch.allclose(out, expected)
    assert not torch.allclose(out, feat)


def test_identity_injector_is_exact_identity_at_gamma_zero() -> None:
    """The embedded option injector_residual='identity': x + gamma*attn, so gamma = 0 returns x."""
    torch.manual_seed(0)
    model = create_model({**load_config("taco-tiny"), "injector_residual": "identity"}).eval()
    block = model.adapter("injector1")
    assert block.residual == "identity"
    feat = torch.randn(1, 16, 4, 4) * 3 + 1
    text = torch.randn(1, 38, TEXT_DIM)
    assert torch.equal(block(feat, text), feat)
    with torch.no_grad():
        block.gamma.fill_(0.5)
    tokens = feat.flatten(2).transpose(1, 2)
    attn, _ = block.cross_attn(block.image_norm(tokens),
                               block.text_norm(block.text_feature_dim_proj(text)),
                               block.text_norm(block.text_feature_dim_proj(text)))
    expected = feat + (0.5 * attn).transpose(1, 2).reshape(feat.shape)
    assert torch.allclose(block(feat, text), expected, atol=1e-6)
    # same parameter names and shapes as the official layout: the weights are interchangeable
    official = create_model("taco-tiny")
    assert {k: v.shape for k, v in official.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()}


def test_identity_taco_from_elic_matches_elic_exactly() -> None:
    """With the identity adapter (gamma = 0), a TACO built from ELIC weights codes like that ELIC."""
    from app.train.warmstart import init_from_weights

    torch.manual_seed(0)
    elic = create_model("elic-tiny").eval()
    taco = create_model({**load_config("taco-tiny"), "injector_residual": "identity"}).eval()
    init_from_weights(taco, elic.state_dict())
    x = torch.rand(1, 3, 64, 64)
    text = torch.randn(1, 38, TEXT_DIM)
    with torch.no_grad():
        assert torch.equal(taco.g_a(x, text, None), elic.g_a(x))


def test_weights_of_one_injector_layout_refuse_the_other(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    save_weights(create_model("taco-tiny"), path)
    other = create_model({**load_config("taco-tiny"), "injector_residual": "identity"})
    with pytest.raises(ConfigError, match="injector_residual"):
        load_weights(other, path)
    load_weights(create_model("taco-tiny"), path)


def test_injector_residual_is_validated() -> None:
    with pytest.raises(ConfigError):
        validate_config({**load_config("taco-tiny"), "injector_residual": "raw"})
    assert load_config("taco-tiny")["injector_residual"] == "layernorm"


def test_attn_mask_variant_ignores_padding() -> None:
    cfg = {**load_config("taco-tiny"), "attn_mask": True}
    model = create_model(cfg).eval()
    model.update(force=True)
    x, text = _inputs()
    mask = torch.zeros(1, 38, dtype=torch.long)
    mask[:, :5] = 1
    garbage = text.clone()
    garbage[:, 5:] = torch.randn(1, 33, TEXT_DIM) * 10
    model.keep_attention(True)
    a = model.compress(x, text, text_mask=mask)
    maps = model.attention_maps()
    b = model.compress(x, garbage, text_mask=mask)
    assert a["strings"] == b["strings"]  # padded positions have no influence
    assert maps["injector1"][:, 5:].abs().max() == 0
    # Official behaviour (no mask): padding positions are attended to.
    official = create_model("taco-tiny").eval()
    official.keep_attention(True)
    official.update(force=True)
    official.compress(x, text, text_mask=mask)
    assert official.attention_maps()["injector1"][:, 5:].abs().max() > 0


# --------------------------------------------------------------------------- weights I/O
@pytest.mark.parametrize("half", [False, True])
def test_save_and_load_weights(tmp_path: Path, taco: TACO, half: bool) -> None:
    path = tmp_path / "w.safetensors"
    save_weights(taco, path, half=half, extra={"note": "test"})
    meta = read_weights_metadata(path)
    assert meta["note"] == "test" and json.loads(meta["config"])["name"] == "taco-tiny"
    fresh = create_model("taco-tiny")
    assert fresh.weights_source is None
    load_weights(fresh, path)
    assert fresh.weights_source == str(path) and not fresh.training
    assert all(p.dtype == torch.float32 for p in fresh.parameters())
    x, text = _inputs()
    if half:
        ref = taco.state_dict()
        for key, value in fresh.state_dict().items():
            assert torch.allclose(value.float(), ref[key].float(), rtol=1e-3, atol=1e-3), key
        enc = fresh.compress(x, text)
        assert fresh.decompress(enc["strings"], enc["shape"])["x_hat"].shape == x.shape
    else:
        assert taco.compress(x, text)["strings"] == fresh.compress(x, text)["strings"]
    n_params = sum(p.numel() for p in taco.parameters())
    assert path.stat().st_size < (2 if half else 4) * n_params + 100_000  # no coder tables stored


def test_saved_weights_are_byte_identical_across_processes(tmp_path: Path) -> None:
    """safetensors writes its metadata in hash order; save_weights sorts it, so the same
    weights always get the same sha256 (the bitstream fingerprint)."""
    import subprocess
    import sys

    code = (
        "import sys, torch; from app.models.factory import create_model, save_weights; "
        "torch.manual_seed(0); m = create_model('elic-tiny'); "
        "save_weights(m, sys.argv[1], half=True, extra={'a': '1', 'b': '2', 'c': '3', 'steps': '9'})"
    )
    root = Path(__file__).resolve().parents[1]
    paths = [tmp_path / f"w{i}.safetensors" for i in range(3)]
    for path in paths:
        subprocess.run([sys.executable, "-c", code, str(path)], check=True, cwd=root, timeout=300)
    first = paths[0].read_bytes()
    assert all(p.read_bytes() == first for p in paths[1:])
    meta = read_weights_metadata(paths[0])
    assert meta["steps"] == "9" and json.loads(meta["config"])["name"] == "elic-tiny"


def test_load_weights_errors(tmp_path: Path, elic: ELIC) -> None:
    with pytest.raises(MissingModelError):
        load_weights(create_model("elic-tiny"), tmp_path / "absent.safetensors")
    path = tmp_path / "elic.safetensors"
    save_weights(elic, path)
    with pytest.raises(ConfigError, match="saved for"):
        load_weights(create_model("taco-tiny"), path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError):
        load_weights(create_model("elic-tiny"), bad)


def _official_style_checkpoint(model: ELIC) -> dict[str, Any]:
    """A checkpoint shaped like TACO's train.py output (DDP ``module.`` prefix, old EB names)."""
    renames = {"matrices": "_matrix", "biases": "_bias", "factors": "_factor"}
    state: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        parts = key.split(".")
        if parts[0] == "entropy_bottleneck" and len(parts) == 3 and parts[1] in renames:
            key = f"entropy_bottleneck.{renames[parts[1]]}{parts[2]}"
        if key.endswith(("._quantized_cdf", "._offset", "._cdf_length", ".scale_table")):
            value = torch.empty(0, dtype=value.dtype)  # never update()d
        state["module." + key] = value.clone()
    return {
        "epoch": 49,
        "state_dict": state,
        "optimizer": {
            "state": {0: {"step": torch.tensor(3.0)}},
            "param_groups": [{"lr": 1e-4, "params": [0]}],
        },
        "aux_optimizer": {"state": {}, "param_groups": [{"lr": 1e-3, "params": [0]}]},
        "lr_scheduler": {"milestones": collections.Counter({45: 1, 48: 1}), "gamma": 0.1},
        "best_psnr": 30.0,
        "best_ms_ssim": 0.9,
        "best_bpp": 0.2,
        "best_lpips": 0.02,
        "recent_saved_model_path": "x.pth.tar",
    }


def test_load_official_checkpoint_format(tmp_path: Path, taco: TACO) -> None:
    # The fixed-rate layout is exercised through a tiny config without gain units.
    cfg = {**load_config("taco-tiny"), "name": "taco-tiny-fixed", "variable_rate": False}
    torch.manual_seed(1)
    source = create_model(cfg).eval()
    source.update(force=True)
    path = tmp_path / "lambda_0.0008.pth.tar"
    torch.save(_official_style_checkpoint(source), path)

    loaded = load_official_checkpoint(path, cfg)
    assert isinstance(loaded, TACO) and loaded.weights_source == str(path)
    assert not loaded.training
    assert loaded.gaussian_conditional.scale_table.shape == (64,)
    x, text = _inputs()
    enc = loaded.compress(x, text)
    assert enc["strings"] == source.compress(x, text)["strings"]

    bare = tmp_path / "bare.pt"  # a bare, already-canonical state_dict also loads
    torch.save(source.state_dict(), bare)
    assert load_official_checkpoint(bare, cfg).compress(x, text)["strings"] == enc["strings"]


def test_load_official_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(MissingModelError, match="not found"):
        load_official_checkpoint(tmp_path / "absent.pth.tar")
    cfg = {**load_config("elic-tiny"), "variable_rate": False}
    source = create_model(cfg)
    ckpt = _official_style_checkpoint(source)
    broken = copy.deepcopy(ckpt)
    del broken["state_dict"]["module.h_a.reduction.0.weight"]
    broken["state_dict"]["module.extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth.tar"
    torch.save(broken, path)
    with pytest.raises(ConfigError, match="1 missing .*h_a.reduction.0.weight.*1 unexpected"):
        load_official_checkpoint(path, cfg)
    path2 = tmp_path / "other.pth.tar"
    torch.save(ckpt, path2)
    with pytest.raises(ConfigError, match="does not match"):
        load_official_checkpoint(path2, "taco-tiny")  # an ELIC file into TACO
    junk = tmp_path / "junk.pth.tar"
    junk.write_bytes(b"\x00garbage")
    with pytest.raises(ConfigError, match="cannot read"):
        load_official_checkpoint(junk, cfg)
