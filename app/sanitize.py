"""Captions made safe for a tokenizer and for display (`clean_caption`), before any model sees them."""

from __future__ import annotations

import unicodedata

from app.errors import CaptionError

MAX_CAPTION_CHARS = 2000
"""Captions are cut to this many characters (code points) by `clean_caption`."""


# Bidi embedding/override/isolate controls (can reorder what the UI shows: "Trojan source") and the
# byte-order mark. Other format characters stay: ZWJ/ZWNJ build emoji and Indic/Arabic text,
# LRM/RLM are harmless.
_DROP_FORMAT = frozenset(
    [0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2066, 0x2067, 0x2068, 0x2069, 0xFEFF]
)


def clean_caption(text: str | None) -> str:
    """Return `text` made safe for a tokenizer and for display.

    - Unicode NFC; control characters (NUL, C0/C1, DEL), lone surrogates, bidi override/isolate
      controls and BOMs are removed.
    - Any run of whitespace (newlines, tabs, Unicode spaces) becomes one space; ends are stripped.
    - The result is capped at `MAX_CAPTION_CHARS` code points.
    - Everything else is kept: emoji (with ZWJ sequences and variation selectors), RTL scripts, CJK.

    `None` gives "". A non-string raises `CaptionError`. Idempotent: clean(clean(x)) == clean(x).
    """
    if text is None:
        return ""
    if not isinstance(text, str):
        raise CaptionError(f"A caption must be text, not {type(text).__name__}.")
    # Bound the work on hostile input before the per-character pass.
    text = text[: MAX_CAPTION_CHARS * 16]
    kept: list[str] = []
    for ch in text:
        if ch.isspace():
            kept.append(" ")
            continue
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Cs") or ord(ch) in _DROP_FORMAT:
            continue
        kept.append(ch)
    # NFC after removing surrogates (which NFC would reject when encoding later on).
    cleaned = " ".join(unicodedata.normalize("NFC", "".join(kept)).split())
    if len(cleaned) > MAX_CAPTION_CHARS:
        cleaned = cleaned[:MAX_CAPTION_CHARS].rstrip()
    return cleaned
