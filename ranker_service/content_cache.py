"""In-process cache of candidate content vectors, by content id.

Content vectors are shared by every user and change rarely (a new content model), while the
same few thousand ads are candidates in most requests: reading and decoding N of them from
Redis per request is the largest avoidable share of the feature path. Entries are bounded in
number (least recently used evicted first), live ``ttl_s`` at most (a vector rewritten in Redis
is seen within that time) and are keyed by the content width they were decoded for: after a
reload to a model with another ``content_dim`` the old entries are dropped on first touch
(``version`` evictions) rather than fed to the new model.

Only found vectors are cached: an id missing in Redis is read again by the next request, so
content written later is used as soon as it exists.

Thread-safe: the event loop reads it before the Redis round trip and the inference thread
fills it after decoding.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from ranker_service.metrics import Metrics


@dataclass(frozen=True, slots=True)
class _Entry:
    vector: np.ndarray  # (E,) float32, read-only
    content_dim: int
    expires_at: float


class ContentCache:
    """LRU + TTL cache of content vectors; ``max_entries = 0`` switches it off."""

    def __init__(
        self,
        max_entries: int,
        ttl_s: float,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries, self.ttl_s = max_entries, ttl_s
        self._metrics, self._clock = metrics, clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get_many(self, content_ids: Iterable[str], content_dim: int) -> dict[str, np.ndarray]:
        """The cached vectors of width ``content_dim`` among ``content_ids`` (hits only)."""
        found: dict[str, np.ndarray] = {}
        if not self.max_entries:
            return found
        now = self._clock()
        misses = expired = stale = 0
        with self._lock:
            for cid in content_ids:
                entry = self._entries.get(cid)
                if entry is None:
                    misses += 1
                elif entry.expires_at <= now:
                    del self._entries[cid]
                    misses, expired = misses + 1, expired + 1
                elif entry.content_dim != content_dim:
                    del self._entries[cid]
                    misses, stale = misses + 1, stale + 1
                else:
                    self._entries.move_to_end(cid)
                    found[cid] = entry.vector
        if m := self._metrics:
            m.child(m.content_cache_lookups, "hit").inc(len(found))
            m.child(m.content_cache_lookups, "miss").inc(misses)
            m.child(m.content_cache_evictions, "expired").inc(expired)
            m.child(m.content_cache_evictions, "version").inc(stale)
            m.content_cache_entries.set(len(self._entries))
        return found

    def put_many(self, vectors: Mapping[str, np.ndarray], content_dim: int) -> None:
        """Store freshly decoded vectors of width ``content_dim``."""
        if not self.max_entries or not vectors:
            return
        expires_at = self._clock() + self.ttl_s
        evicted = 0
        with self._lock:
            for cid, vector in vectors.items():
                vector.flags.writeable = False  # shared by every request that hits it
                self._entries[cid] = _Entry(vector, content_dim, expires_at)
                self._entries.move_to_end(cid)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
                evicted += 1
        if m := self._metrics:
            m.child(m.content_cache_evictions, "capacity").inc(evicted)
            m.content_cache_entries.set(len(self._entries))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
        if m := self._metrics:
            m.content_cache_entries.set(0)
