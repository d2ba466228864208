"""Tests for app.captioner on a tiny random BLIP saved to a temp folder (no network, no hub).

The tiny model's output bias is pushed towards one token so that the generated text is known.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.errors import CaptionError, ImageInputError, MissingModelError

WORDS = ["a", "dog", "cat", "on", "the", "sofa", "red", "car", "photo", "of"]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]


@pytest.fixture(autouse=True)
def no_network(refused_connections: list[str], monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Offline mode on; any connection attempt is refused, recorded and fails the test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.delenv("TACO_BLIP_DIR", raising=False)
    attempts = refused_connections
    yield
    assert not attempts, f"network access attempted: {attempts}"


def _make_tiny_blip(folder: Path, favourite: str) -> Path:
    """Save a tiny random BLIP captioner + processor whose decoder strongly prefers `favourite`."""
    import torch
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    vocab = {tok: i for i, tok in enumerate(SPECIALS + WORDS)}
    tokenizer = BertTokenizer(vocab=vocab, bos_token="[DEC]")
    processor = BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer
    )
    config = BlipConfig(
        text_config=dict(
            vocab_size=len(vocab),
            hidden_size=32,
            encoder_hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=64,
            bos_token_id=vocab["[DEC]"],
            sep_token_id=vocab["[SEP]"],
            eos_token_id=vocab["[SEP]"],
            pad_token_id=vocab["[PAD]"],
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=16,
        ),
        projection_dim=16,
    )
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(config)
    with torch.no_grad():
        bias = model.text_decoder.cls.predictions.bias
        bias.zero_()
        bias[vocab[favourite]] = 50.0
    folder.mkdir(parents=True, exist_ok=True)
    processor.save_pretrained(folder)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def dog_blip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_tiny_blip(tmp_path_factory.mktemp("blip_dog"), "dog")


@pytest.fixture
def image():  # type: ignore[no-untyped-def]
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))


def test_caption_tiny_blip_bounded(dog_blip: Path, image) -> None:  # type: ignore[no-untyped-def]
    from app.captioner import caption_image, clear_captioner_cache

    clear_captioner_cache()
    text = caption_image(image, model_dir=dog_blip, max_new_tokens=5, num_beams=2)
    assert isinstance(text, str)
    assert text.split() == ["dog"] * 5  # bounded by max_new_tokens
    # Greyscale / RGBA inputs are converted; the result is deterministic and the loader cached.
    again = caption_image(image.convert("LA"), model_dir=dog_blip, max_new_tokens=3)
    assert again == "dog dog dog"
    from app.captioner import _load

    assert _load.cache_info().currsize == 1
    clear_captioner_cache()


def test_caption_env_var(dog_blip: Path, image, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from app.captioner import caption_image, captioner_available

    monkeypatch.setenv("TACO_BLIP_DIR", str(dog_blip))
    ok, why = captioner_available()
    assert ok and str(dog_blip) in why
    assert caption_image(image, max_new_tokens=2, num_beams=1) == "dog dog"


def test_caption_empty_output_is_caption_error(tmp_path: Path, image) -> None:  # type: ignore[no-untyped-def]
    from app.captioner import caption_image

    folder = _make_tiny_blip(tmp_path / "blip_sep", "[SEP]")  # stops at once
    with pytest.raises(CaptionError):
        caption_image(image, model_dir=folder, max_new_tokens=4)


def test_caption_rejects_non_image(dog_blip: Path) -> None:
    from app.captioner import caption_image

    with pytest.raises(ImageInputError):
        caption_image("not an image", model_dir=dog_blip)  # type: ignore[arg-type]


def test_captioner_available_is_cheap(
    dog_blip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app import captioner

    captioner.clear_captioner_cache()
    ok, why = captioner.captioner_available(model_dir=dog_blip)
    assert ok and "\n" not in why

    ok, why = captioner.captioner_available(model_dir=tmp_path / "missing")
    assert not ok and "does not exist" in why and "TACO_BLIP_DIR" in why

    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    ok, why = captioner.captioner_available(model_dir=tmp_path / "half")
    assert not ok and "weights" in why

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    t0 = time.perf_counter()
    ok, why = captioner.captioner_available()
    assert time.perf_counter() - t0 < 1.0
    assert not ok and "offline" in why and captioner.BLIP_HUB_ID in why
    assert captioner._load.cache_info().currsize == 0  # nothing was loaded


def test_caption_offline_missing_is_one_line(
    tmp_path: Path, image, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    from app.captioner import BLIP_HUB_ID, caption_image

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    t0 = time.perf_counter()
    with pytest.raises(MissingModelError) as err:
        caption_image(image)
    assert time.perf_counter() - t0 < 10.0
    msg = str(err.value)
    assert "\n" not in msg and BLIP_HUB_ID in msg and "TACO_BLIP_DIR" in msg

    with pytest.raises(MissingModelError, match="does not exist"):
        caption_image(image, model_dir=tmp_path / "nope")
