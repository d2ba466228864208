"""Extreme captions: sanitised, tokenised with the truncation stated, and encoded by TACO.

A caption reaches TACO's encoder only (never the file): whatever a user or an API client types
must give a clean caption, a token count that says what was cut, and a valid `.taco` file, or a
one-line :class:`app.errors.CaptionError`.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import text as text_mod
from app.errors import CaptionError

clean_caption = text_mod.clean_caption
MAX_CHARS: int = text_mod.MAX_CAPTION_CHARS
BIDI_CONTROLS = {0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2066, 0x2067, 0x2068, 0x2069}

EXTREME: dict[str, str] = {
    "empty": "",
    "whitespace": " \t\n\r\u00a0\u2003\u3000\u2028 ",
    "ten_thousand_words": " ".join(f"word{i % 97}" for i in range(10_000)),
    "emoji": "👨‍👩‍👧‍👦 a family, 🏳️‍🌈 a flag, 🇫🇷, ✌🏽 and 😀 " * 3,
    "right_to_left": "قطة سوداء على طاولة خشبية — חתול שחור על שולחן",
    "bidi_override": "a cat \u202eon a table\u202c (trojan-source style)",
    "control_chars": "a\x00b\x01c\x1b[31md\x7f\x85e\x9bf\u2028g",
    "nul_only": "\x00" * 100,
    "lone_surrogates": "a cat \ud800 on a \udfff mat",
    "one_megabyte": "photo of a cat " * ((1 << 20) // 15),
    "zalgo": "c" + "\u0301\u0316\u0347" * 3000 + "at",
    "cjk_long": "一只猫坐在木桌上。" * 500,
    "html_markdown": '<img src=x onerror=alert(1)> **bold** [x](javascript:alert(1)) `code`',
    "bom_and_zw": "\ufeffa\u200bcat\u200d\u200c\u2060",
    "newlines_only": "\n" * 5000,
}
IDS = list(EXTREME)


def _is_clean(text: str) -> None:
    assert isinstance(text, str) and len(text) <= MAX_CHARS
    assert text == text.strip() and "  " not in text
    for ch in text:
        assert unicodedata.category(ch) not in ("Cc", "Cs"), repr(ch)
        assert ord(ch) not in BIDI_CONTROLS and ch != "\ufeff", repr(ch)
    text.encode("utf-8")  # strict: no lone surrogate survived


# ------------------------------------------------------------------------------- clean_caption


@pytest.mark.parametrize("name", IDS)
def test_clean_caption_extremes(name: str) -> None:
    out = clean_caption(EXTREME[name])
    _is_clean(out)
    assert clean_caption(out) == out
    if name in ("empty", "whitespace", "nul_only", "newlines_only"):
        assert out == ""
    if name == "right_to_left":
        assert "قطة" in out and "חתול" in out  # RTL scripts are kept, only controls go
    if name == "emoji":
        assert "👨‍👩‍👧‍👦" in out  # ZWJ sequences survive


@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.text(st.characters(exclude_categories=()), max_size=3000))
def test_clean_caption_any_text(text: str) -> None:
    """Any string at all (surrogates, controls, combining marks): clean, bounded, idempotent."""
    out = clean_caption(text)
    _is_clean(out)
    assert clean_caption(out) == out


@pytest.mark.parametrize("bad", [123, b"bytes", ["list"], {"a": 1}])
def test_non_text_caption_is_a_caption_error(bad: object) -> None:
    with pytest.raises(CaptionError) as info:
        clean_caption(bad)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------- tokenizer


@pytest.fixture(scope="module")
def minilm() -> object:
    from app.errors import MissingModelError

    try:
        return text_mod.get_text_encoder("minilm")
    except MissingModelError as exc:
        pytest.skip(f"MiniLM unavailable: {exc}")


@pytest.mark.parametrize("name", IDS)
def test_token_info_states_truncation(name: str, minilm: object) -> None:
    text = clean_caption(EXTREME[name])
    info = minilm.tokenize_info(text)  # type: ignore[attr-defined]
    assert info.max_len == 38 and info.n_tokens >= 2  # [CLS] ... [SEP]
    assert info.truncated == (info.n_tokens > info.max_len)
    assert info.n_kept == min(info.n_tokens, info.max_len)
    if info.truncated:
        assert info.kept_text and text.startswith(info.kept_text)
        assert len(info.kept_text) < len(text)
    else:
        assert info.kept_text == text
    if name in ("ten_thousand_words", "cjk_long", "one_megabyte"):
        assert info.truncated


RAW_XFAIL: dict[str, str] = {}  # lone surrogates now raise CaptionError (app/text.py)


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.xfail(reason=RAW_XFAIL[n])) if n in RAW_XFAIL else n for n in IDS],
)
def test_token_info_on_raw_text(name: str, minilm: object) -> None:
    """tokenize_info is public: raw (uncleaned) text must work or raise a one-line CaptionError."""
    try:
        info = minilm.tokenize_info(EXTREME[name])  # type: ignore[attr-defined]
    except CaptionError as exc:
        assert "\n" not in str(exc)
        return
    assert info.truncated == (info.n_tokens > info.max_len)


# ------------------------------------------------------------------------------- TACO compress


@pytest.fixture(scope="module")
def taco() -> Iterator[object]:
    import torch

    from app.codecs import load_codec

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_codec("taco-tiny", allow_random=True)
    torch.set_num_threads(n)


IMG = (np.indices((40, 52)).sum(0)[..., None] * np.array([3, 5, 7]) % 256).astype(np.uint8)


@pytest.mark.parametrize("name", IDS)
def test_taco_compresses_with_any_caption(name: str, taco: object) -> None:
    from app import bitstream
    from app.codecs import decompress

    caption = EXTREME[name]
    data = taco.compress(IMG, caption=caption)  # type: ignore[attr-defined]
    header, strings = bitstream.unpack(data)
    assert (header.height, header.width) == IMG.shape[:2]
    kept = clean_caption(caption)
    if len(kept) >= 8:
        assert kept[:8].encode() not in data  # the caption is never in the file
    if name in ("emoji", "lone_surrogates", "one_megabyte"):  # decoding never sees the caption
        assert decompress(data).size == (IMG.shape[1], IMG.shape[0])


def test_captions_equal_after_cleaning_give_identical_files(taco: object) -> None:
    """"", whitespace, NUL and newlines all mean "no caption": the same bytes."""
    files = {
        taco.compress(IMG, caption=EXTREME[n])  # type: ignore[attr-defined]
        for n in ("empty", "whitespace", "nul_only", "newlines_only")
    }
    assert len(files) == 1


def test_ui_token_counter_reports_truncation() -> None:
    from app.ui.captions import caption_token_markdown
    from app.ui.model_sets import TINY_SET

    for name, text in EXTREME.items():
        md = caption_token_markdown(text, TINY_SET)
        assert isinstance(md, str) and md, name
        if name in ("ten_thousand_words", "cjk_long", "one_megabyte"):
            assert "truncated" in md, md
        if name in ("empty", "whitespace", "nul_only"):
            assert "Empty caption" in md, md
