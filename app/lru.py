"""A small thread-safe least-recently-used cache (UI results, kept latents, LPIPS references)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

from app.settings import get_settings


class LRUCache:
    """Least-recently-used cache with a bounded number of entries (default: ``TACO_UI_CACHE_ENTRIES``,
    read when the cache first stores something)."""

    def __init__(self, max_entries: int | None = None) -> None:
        self._max_entries = max_entries
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                self.hits += 1
                return self._data[key]
            self.misses += 1
            return None

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    @property
    def max_entries(self) -> int:
        if self._max_entries is None:
            self._max_entries = get_settings().ui_cache_entries
        return self._max_entries

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._data)
