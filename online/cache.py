"""A small thread-safe LRU cache that counts its hits and misses.

Each loaded bundle owns its caches, so a swap drops them with the old bundle and no entry
can outlive the version it was computed from.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class LRUCache(Generic[V]):
    def __init__(self, name: str, maxsize: int) -> None:
        self.name = name
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0
        self._data: OrderedDict[Hashable, V] = OrderedDict()
        # gthread workers may serve requests concurrently; OrderedDict moves are not atomic.
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: Hashable) -> V | None:
        """The cached value (counted as a hit) or None (a miss; always, when disabled)."""
        from online import metrics

        value = None
        if self.maxsize > 0:
            with self._lock:
                value = self._data.get(key)
                if value is not None:
                    self._data.move_to_end(key)
                    self.hits += 1
                else:
                    self.misses += 1
        metrics.CACHE_REQUESTS.labels(self.name, "hit" if value is not None else "miss").inc()
        return value

    def put(self, key: Hashable, value: V) -> None:
        if self.maxsize <= 0:
            return
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def get_or_compute(self, key: Hashable, compute: Callable[[], V]) -> V:
        """Return the cached value or compute, store and return it (computed outside the lock).
        Values are never None (None means "not cached")."""
        value = self.get(key)
        if value is None:
            value = compute()
            self.put(key, value)
        return value

    @property
    def hit_ratio(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0
