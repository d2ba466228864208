"""One exception family for everything a user can get wrong.

Every error a user can trigger (a bad image, a corrupted bitstream, a missing model) is a
`TacoError` whose message is a single line fit to show in the CLI or the UI.
"""

from __future__ import annotations


class TacoError(Exception):
    """Base class: a user-facing problem with a one-line message."""


class BitstreamError(TacoError, ValueError):
    """A `.taco` file is corrupted, truncated, foreign or unsupported."""


class ImageInputError(TacoError, ValueError):
    """An input image cannot be read or used."""


class CaptionError(TacoError, ValueError):
    """A caption cannot be used (after sanitising)."""


class MissingModelError(TacoError, RuntimeError):
    """Weights or a pretrained model are not available (offline, or not downloaded)."""


class ConfigError(TacoError, ValueError):
    """A model or training configuration is invalid."""


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message, or its class name when it has none."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def printable(text: object) -> str:
    """``text`` on one printable line: control characters (newline, CR, ESC, bidi overrides, lone
    surrogates from undecodable file names) are shown escaped.

    Messages quote user file names, and a name like ``"a\\nb.png"`` or one with an ANSI escape
    would otherwise break the one-line-error promise (or raise UnicodeEncodeError on stdout).
    """
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in str(text))
