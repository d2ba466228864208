"""Which rates an evaluation measures: the defaults per codec and the ``--rates`` syntax."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from app.codecs.protocol import Codec
from app.errors import ConfigError

#: Default qualities for the classical codecs: about 0.1–1.5 bpp on Kodak (JPEG cannot go below
#: ≈ 0.2 bpp). JPEG keeps quality 50, the sanity anchor.
DEFAULT_CLASSICAL_RATES: dict[str, list[float]] = {
    "jpeg": [5, 10, 20, 35, 50, 75],
    "webp": [1, 10, 25, 50, 75, 85],
    "avif": [10, 20, 30, 40, 55, 70],
}
#: Number of log-spaced λ for a learned codec with a continuous ``rate_range`` and no ladder.
LEARNED_DEFAULT_POINTS = 6


def parse_rates(specs: Sequence[str] | None, codecs: Sequence[str]) -> dict[str, list[float] | None]:
    """``--rates`` values → per-codec rate lists (None = the codec's default).

    Each spec is ``CODEC=r1,r2,...`` (for one codec) or ``r1,r2,...`` (for every codec without
    its own spec). Specs may be given several times or joined with ``;``.
    """
    result: dict[str, list[float] | None] = {c: None for c in codecs}
    common: list[float] | None = None
    for spec in specs or []:
        for part in filter(None, (s.strip() for s in spec.split(";"))):
            name, sep, values = part.partition("=")
            try:
                rates = [float(v) for v in (values if sep else name).split(",") if v.strip()]
            except ValueError as exc:
                raise ConfigError(f"bad --rates value {part!r}: {exc}") from exc
            if not rates:
                raise ConfigError(f"--rates {part!r} lists no rate")
            if sep:
                key = name.strip().lower()
                if key not in result:
                    raise ConfigError(f"--rates names codec {key!r}, which is not in --codecs")
                result[key] = rates
            else:
                common = rates
    if common is not None:
        for c in codecs:
            if result[c] is None:
                result[c] = list(common)
    return result


def default_rates(name: str, codec: Codec) -> list[float]:
    """The default rate set of a codec (see ``--help``)."""
    if name in DEFAULT_CLASSICAL_RATES:
        return list(DEFAULT_CLASSICAL_RATES[name])
    if codec.rate_ladder:
        return [float(r) for r in codec.rate_ladder]
    if codec.rate_range:
        lo, hi = codec.rate_range
        return [float(r) for r in np.geomspace(lo, hi, LEARNED_DEFAULT_POINTS)]
    raise ConfigError(f"codec {name!r} has neither a rate ladder nor a rate range: pass --rates")
