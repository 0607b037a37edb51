"""A small thread-safe map that forgets its least recently used entries.

One utility for the per-process caches (study contexts, tokens, rate-limit buckets, the
dashboard's aggregates, importances and rendered views), which each used to keep their own
``OrderedDict`` with ``move_to_end`` and ``popitem``.

- ``maxsize`` bounds the total *weight* of the entries: one per entry by default, or what
  ``weigh(value)`` says (the dashboard bounds its rendered views by their bytes). An entry
  heavier than ``maxsize`` on its own is not kept.
- ``ttl``, when given, is the seconds an entry lives after it was put; an expired entry is
  dropped when it is next looked at (a read, or an eviction that reaches it), so ``len``
  may count some that have expired. ``clock`` (``time.monotonic`` by default) is injectable
  so tests need not sleep.
- ``get`` counts as a use; ``peek`` reads without moving the entry, for a cache that
  should forget in the order entries were stored.

A stored ``None`` is indistinguishable from a miss for ``get`` and ``peek``: don't store it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRU(Generic[K, V]):
    def __init__(
        self,
        maxsize: int,
        ttl: float | None = None,
        *,
        weigh: Callable[[V], int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if maxsize < 0:
            raise ValueError(f"maxsize must be >= 0, not {maxsize}")
        if ttl is not None and ttl < 0:
            raise ValueError(f"ttl must be >= 0 seconds, not {ttl}")
        self.maxsize = maxsize
        self.ttl = ttl
        self._weigh = weigh
        self._clock = clock
        # key -> (value, weight, expires at or None)
        self._data: OrderedDict[K, tuple[V, int, float | None]] = OrderedDict()
        self._weight = 0
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        """The value under ``key`` (now the most recently used), or None."""
        return self._read(key, touch=True)

    def peek(self, key: K) -> V | None:
        """The value under ``key`` without counting it as a use, or None."""
        return self._read(key, touch=False)

    def put(self, key: K, value: V) -> None:
        """Store ``value`` under ``key`` as the most recently used, then forget the least
        recently used entries until the total weight fits ``maxsize``."""
        weight = self._weigh(value) if self._weigh is not None else 1
        expires = self._clock() + self.ttl if self.ttl is not None else None
        with self._lock:
            self._drop(key)
            if weight > self.maxsize:
                return
            self._data[key] = (value, weight, expires)
            self._weight += weight
            while self._weight > self.maxsize:
                _, (_, dropped, _) = self._data.popitem(last=False)
                self._weight -= dropped

    def pop(self, key: K) -> V | None:
        """Forget ``key``; its value if it was there and alive, else None."""
        now = self._clock()
        with self._lock:
            item = self._drop(key)
            if item is None or (item[2] is not None and item[2] < now):
                return None
            return item[0]

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._weight = 0

    def items(self) -> list[tuple[K, V]]:
        """A snapshot of the live entries, least recently used first."""
        now = self._clock()
        with self._lock:
            return [(k, v) for k, (v, _, exp) in self._data.items() if exp is None or exp >= now]

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def _read(self, key: K, touch: bool) -> V | None:
        now = self._clock() if self.ttl is not None else 0.0
        with self._lock:
            item = self._data.get(key)
            if item is None:
                return None
            if item[2] is not None and item[2] < now:
                self._drop(key)
                return None
            if touch:
                self._data.move_to_end(key)
            return item[0]

    def _drop(self, key: K) -> tuple[V, int, float | None] | None:
        item = self._data.pop(key, None)
        if item is not None:
            self._weight -= item[1]
        return item
