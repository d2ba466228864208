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
