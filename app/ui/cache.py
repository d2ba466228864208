"""The UI's results cache, keyed on image content and settings."""

from __future__ import annotations

import logging

import numpy as np

from app.hashing import array_digest
from app.lru import LRUCache

__all__ = ["RESULTS_CACHE", "LRUCache", "image_digest"]

log = logging.getLogger(__name__)


RESULTS_CACHE = LRUCache()


def image_digest(arr: np.ndarray) -> str:
    return array_digest(arr).hex()
