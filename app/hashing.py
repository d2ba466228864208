"""Checksums: the SHA-256 that ``checkpoints/manifest.json`` records for every shipped file, and
the in-memory digests that tell which image a cached result belongs to."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np


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


def array_digest(arr: np.ndarray) -> bytes:
    """16-byte BLAKE2b of an array's dtype, shape and contents (a cache key, not a checksum)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(np.ascontiguousarray(arr).data)
    return h.digest()
