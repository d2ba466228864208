"""File checksums: the SHA-256 that ``checkpoints/manifest.json`` records for every shipped file."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, streamed."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


@functools.lru_cache(maxsize=64)
def _cached(path: str, size: int, mtime: float) -> str:
    return sha256_file(Path(path))


def sha256_cached(path: Path) -> str:
    """`sha256_file`, remembered per (path, size, mtime) so a loaded checkpoint is hashed once."""
    st = path.stat()
    return _cached(str(path), st.st_size, st.st_mtime)
