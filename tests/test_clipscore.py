"""Tests for app.clipscore on tiny random open_clip models (no network, no real weights).

open_clip's BPE vocabulary ships inside the package, so its tokenizer works offline.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Custom widths need explicit heads (local-dir config); OpenAI-format checkpoints infer heads as
# width // 64, so that variant uses width 64.
TINY_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
TINY_OPENAI_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1},
}


@pytest.fixture(autouse=True)
def no_network(
    refused_connections: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[list[str]]:
    """Offline mode, empty caches, and every socket or open_clip download path refused."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.delenv("TACO_OPENCLIP_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # ~/.cache/clip is empty
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-hub"))
    attempts = refused_connections

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(repr(args)[:200])
        raise OSError("network access refused by the test")

    import open_clip.factory
    import open_clip.openai
    import open_clip.pretrained

    for module, name in [
        (open_clip.pretrained, "download_pretrained"),
        (open_clip.pretrained, "download_pretrained_from_url"),
        (open_clip.pretrained, "download_pretrained_from_hf"),
        (open_clip.factory, "download_pretrained"),
        (open_clip.factory, "download_pretrained_from_hf"),
        (open_clip.openai, "download_pretrained_from_url"),
    ]:
        monkeypatch.setattr(module, name, refuse)

    from app.clipscore import clear_clipscore_cache

    clear_clipscore_cache()
    yield attempts
    clear_clipscore_cache()
    assert not attempts, f"network/download attempted: {attempts}"


@pytest.fixture
def image():  # type: ignore[no-untyped-def]
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))


def _tiny_local_dir(folder: Path) -> Path:
    import torch
    from open_clip.model import CLIP
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": TINY_CFG, "preprocess_cfg": {}})
    )
    torch.manual_seed(0)
    save_file(CLIP(**TINY_CFG).state_dict(), str(folder / "open_clip_model.safetensors"))
    return folder


def _tiny_openai_file(path: Path):  # type: ignore[no-untyped-def]
    """An OpenAI-format (QuickGELU) state dict saved as ViT-B-32.pt; returns the source model."""
    import torch
    from open_clip.model import CLIP

    torch.manual_seed(1)
    model = CLIP(**TINY_OPENAI_CFG, quick_gelu=True).eval()
    with torch.no_grad():  # OpenAI checkpoints are fp16; the loader round-trips through fp16
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model


def test_import_is_light() -> None:
    code = (
        "import sys, app.clipscore, app.captioner\n"
        "heavy = [m for m in ('torch', 'transformers', 'open_clip') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)


def test_clip_score_local_dir(tmp_path: Path, image) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    from app.clipscore import ClipScore, clip_score, clipscore_available

    folder = _tiny_local_dir(tmp_path / "tiny_openclip")
    ok, why = clipscore_available(folder)
    assert ok and str(folder) in why

    result = clip_score(image, "a photo of a dog", model_dir=folder)
    assert isinstance(result, ClipScore)
    assert result.value is not None and math.isfinite(result.value)
    assert 0.0 <= result.value <= 100.0
    assert "100·max(cos, 0)" in result.reason
    again = clip_score(np.asarray(image), "  a photo\nof a dog ", model_dir=folder)
    assert again.value == pytest.approx(result.value, abs=1e-5)  # array input, cleaned caption

    empty = clip_score(image, " \x00 ", model_dir=folder)
    assert empty.value is None and empty.reason.startswith("n/a")


def test_clip_score_openai_file_matches_definition(
    tmp_path: Path,
    image,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    import open_clip
    import torch
    import torch.nn.functional as F

    from app.clipscore import clip_score

    path = tmp_path / "weights" / "ViT-B-32.pt"
    ref_model = _tiny_openai_file(path)
    monkeypatch.setenv("TACO_OPENCLIP_DIR", str(path.parent))
    caption = "a red car"
    result = clip_score(image, caption)
    assert result.value is not None and "ViT-B-32.pt" in result.reason

    # Reference: the definition computed by hand on the source model.
    from open_clip.transform import PreprocessCfg, image_transform_v2

    pre = image_transform_v2(PreprocessCfg(size=32), is_train=False)
    tok = open_clip.get_tokenizer("ViT-B-32")
    with torch.no_grad():
        a = F.normalize(ref_model.encode_image(pre(image)[None]), dim=-1)
        b = F.normalize(ref_model.encode_text(tok([caption])), dim=-1)
    cos = float((a * b).sum())
    assert result.value == pytest.approx(100 * max(cos, 0.0), abs=1e-3)
    assert f"{cos:.4f}" in result.reason


def test_clip_score_found_in_clip_url_cache(tmp_path: Path, image) -> None:  # type: ignore[no-untyped-def]
    from app.clipscore import clip_score

    _tiny_openai_file(tmp_path / "home" / ".cache" / "clip" / "ViT-B-32.pt")
    result = clip_score(image, "a cat")
    assert result.value is not None


def test_offline_missing_weights_is_na_without_download(image, no_network) -> None:  # type: ignore[no-untyped-def]
    from app import clipscore

    result = clipscore.clip_score(image, "a dog on a sofa")
    assert result.value is None
    assert result.reason.startswith("n/a: CLIP ViT-B-32 weights not available offline")
    assert "TACO_OPENCLIP_DIR" in result.reason and "\n" not in result.reason
    ok, why = clipscore.clipscore_available()
    assert not ok and why == result.reason
    assert clipscore._load.cache_info().currsize == 0  # no model was even built


def test_unreachable_hub_is_na_without_download(
    image,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    from app import clipscore, hub

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE")
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    probes: list[str] = []

    def fake_probe(host: str, port: int, timeout: float) -> bool:
        probes.append(host)
        return False

    monkeypatch.setattr(hub, "probe", fake_probe)
    monkeypatch.setattr(hub, "_probe_cache", {})
    result = clipscore.clip_score(image, "a dog")
    assert result.value is None and result.reason.startswith("n/a: CLIP ViT-B-32 weights")
    assert probes == ["huggingface.co"]


def test_bad_explicit_path_is_na(tmp_path: Path, image) -> None:  # type: ignore[no-untyped-def]
    from app.clipscore import clip_score

    missing = clip_score(image, "a dog", model_dir=tmp_path / "nope")
    assert missing.value is None and "does not exist" in missing.reason
    (tmp_path / "empty").mkdir()
    empty = clip_score(image, "a dog", model_dir=tmp_path / "empty")
    assert empty.value is None and "no CLIP ViT-B-32 weights" in empty.reason
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    junk = clip_score(image, "a dog", model_dir=tmp_path / "junk.safetensors")
    assert junk.value is None and "could not be loaded" in junk.reason
    bad_image = clip_score("nope", "a dog", model_dir=tmp_path / "junk.safetensors")  # type: ignore[arg-type]
    assert bad_image.value is None and "image" in bad_image.reason
