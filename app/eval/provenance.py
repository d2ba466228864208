"""``provenance.json``: which weights / encoder made the rows of an output folder.

One entry per (codec, rate) column, ``"codec@rate": identity``, and the caption mode of the
folder. A re-run after new weights land measures that codec's rows again instead of reusing stale
ones; rows without an entry (copied in by hand, say) are trusted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from app.codecs.protocol import Codec
from app.errors import ConfigError, TacoError

PROVENANCE_FILE = "provenance.json"


def codec_identity(codec: Codec, rate: float) -> str:
    """What produces a (codec, rate) row: ``weights:<fingerprint>`` for a learned codec (the
    16-hex-digit weights fingerprint its bitstreams carry), ``pillow:<version>`` for a Pillow
    codec."""
    if codec.capabilities.learned:
        try:
            value = codec.fingerprint(rate)
        except TacoError:
            value = None
        if value is not None:
            return "weights:" + value.hex()
        return f"class:{type(codec).__name__}"
    import PIL

    return f"pillow:{PIL.__version__}"


def read_provenance(path: Path) -> dict[str, Any]:
    """``{"caption_mode": str | None, "rows": {"codec@rate": identity}}`` ({} if absent)."""
    if not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}; delete it or use another --out") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("rows", {}), dict):
        raise ConfigError(f"{path} is not a provenance file of this tool; use another --out")
    return raw


def write_provenance(path: Path, caption_mode: str, rows: Mapping[str, str]) -> None:
    """Record the caption mode and the identity of every (codec, rate) column."""
    path.write_text(json.dumps({"caption_mode": caption_mode, "rows": dict(rows)},
                               indent=2, sort_keys=True) + "\n", encoding="utf-8")
