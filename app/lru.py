"""A small thread-safe least-recently-used cache (UI results, kept latents, LPIPS references)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from app.settings import get_settings


class LRUCache:
    """Least-recently-used cache with a bounded number of entries (default: ``TACO_UI_CACHE_ENTRIES``,
    read when the cache first stores something)."""

    def __init__(self, max_entries: int | None = None) -> None:
        self._max_entries = max_entries
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._making: dict[Hashable, threading.Lock] = {}
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

    def get_or_make(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """The value for ``key``, made by ``make()`` and stored if missing.

        Single flight: a second thread asking for a key that is being made waits for that value
        instead of making it again (two requests on one image never code it twice at once). An
        exception in ``make`` stores nothing and reaches only the thread that ran it; a waiting
        thread then makes the value itself.
        """
        value = self.get(key)
        if value is not None:
            return value
        with self._lock:
            gate = self._making.setdefault(key, threading.Lock())
        with gate:
            value = self.get(key)
            if value is None:
                value = make()
                self.put(key, value)
        with self._lock:
            if self._making.get(key) is gate and not gate.locked():
                del self._making[key]
        return value

    @property
    def max_entries(self) -> int:
        if self._max_entries is None:
            self._max_entries = get_settings().ui_cache_entries
        return self._max_entries

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.hits = self.misses = 0

    def __contains__(self, key: Hashable) -> bool:
        """Whether ``key`` is stored (neither a use of the entry nor a hit or miss)."""
        with self._lock:
            return key in self._data

    def __len__(self) -> int:
        return len(self._data)
