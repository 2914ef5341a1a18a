"""The content-vector cache: bounded, expiring, keyed by content width, counted."""

from __future__ import annotations

import numpy as np
import pytest

from ranker_service.content_cache import ContentCache
from ranker_service.metrics import Metrics


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _vec(x: float, dim: int = 4) -> np.ndarray:
    return np.full(dim, x, dtype=np.float32)


def _count(metrics: Metrics, name: str, label: str) -> float:
    value = metrics.registry.get_sample_value(
        name, {"result" if "lookups" in name else "reason": label}
    )
    return value or 0.0


def test_hits_misses_and_lru_bound() -> None:
    metrics = Metrics()
    cache = ContentCache(max_entries=2, ttl_s=60, metrics=metrics, clock=Clock())
    cache.put_many({"a": _vec(1), "b": _vec(2)}, 4)
    assert set(cache.get_many(["a", "x"], 4)) == {"a"}  # touches a: b is now the oldest
    cache.put_many({"c": _vec(3)}, 4)
    assert len(cache) == 2
    assert set(cache.get_many(["a", "b", "c"], 4)) == {"a", "c"}
    assert _count(metrics, "ranker_content_cache_lookups_total", "hit") == 3
    assert _count(metrics, "ranker_content_cache_lookups_total", "miss") == 2
    assert _count(metrics, "ranker_content_cache_evictions_total", "capacity") == 1
    assert metrics.registry.get_sample_value("ranker_content_cache_entries") == 2


def test_entries_expire_after_ttl() -> None:
    clock, metrics = Clock(), Metrics()
    cache = ContentCache(max_entries=10, ttl_s=5, metrics=metrics, clock=clock)
    cache.put_many({"a": _vec(1)}, 4)
    clock.now += 4.9
    assert "a" in cache.get_many(["a"], 4)
    clock.now += 0.2
    assert cache.get_many(["a"], 4) == {}
    assert len(cache) == 0
    assert _count(metrics, "ranker_content_cache_evictions_total", "expired") == 1


def test_another_content_width_is_a_miss_and_drops_the_entry() -> None:
    metrics = Metrics()
    cache = ContentCache(max_entries=10, ttl_s=60, metrics=metrics, clock=Clock())
    cache.put_many({"a": _vec(1, dim=4)}, 4)
    assert cache.get_many(["a"], 8) == {}  # a model reloaded with content_dim 8
    assert cache.get_many(["a"], 4) == {}  # dropped, not kept for the old width
    assert _count(metrics, "ranker_content_cache_evictions_total", "version") == 1


def test_cached_vectors_are_read_only_and_zero_entries_is_off() -> None:
    cache = ContentCache(max_entries=10, ttl_s=60, clock=Clock())
    cache.put_many({"a": _vec(1)}, 4)
    with pytest.raises(ValueError):
        cache.get_many(["a"], 4)["a"][0] = 5.0  # shared by every request that hits it
    off = ContentCache(max_entries=0, ttl_s=60, clock=Clock())
    off.put_many({"a": _vec(1)}, 4)
    assert off.get_many(["a"], 4) == {} and len(off) == 0


def test_an_entry_expires_at_exactly_its_ttl_and_every_drop_is_a_miss() -> None:
    clock, metrics = Clock(), Metrics()
    cache = ContentCache(max_entries=10, ttl_s=5, metrics=metrics, clock=clock)
    cache.put_many({"a": _vec(1), "b": _vec(2, dim=8)}, 4)
    clock.now += 5  # "ttl_s at most": at put + ttl_s it is gone
    assert cache.get_many(["a", "x", "y"], 4) == {}
    assert _count(metrics, "ranker_content_cache_lookups_total", "miss") == 3
    assert _count(metrics, "ranker_content_cache_evictions_total", "expired") == 1
    cache.put_many({"b": _vec(2)}, 4)
    assert cache.get_many(["b"], 8) == {}  # another width: dropped, one more miss
    assert _count(metrics, "ranker_content_cache_lookups_total", "miss") == 4
    assert _count(metrics, "ranker_content_cache_evictions_total", "version") == 1


def test_capacity_evictions_are_counted_one_by_one() -> None:
    metrics = Metrics()
    cache = ContentCache(max_entries=2, ttl_s=60, metrics=metrics, clock=Clock())
    cache.put_many({"a": _vec(1), "b": _vec(2)}, 4)
    cache.put_many({"c": _vec(3), "d": _vec(4), "e": _vec(5)}, 4)  # a, b and c go
    assert set(cache.get_many(["a", "b", "c", "d", "e"], 4)) == {"d", "e"}
    assert _count(metrics, "ranker_content_cache_evictions_total", "capacity") == 3


def test_a_switched_off_cache_stores_and_counts_nothing() -> None:
    metrics = Metrics()
    off = ContentCache(max_entries=0, ttl_s=60, metrics=metrics, clock=Clock())
    off.put_many({"a": _vec(1)}, 4)
    assert _count(metrics, "ranker_content_cache_evictions_total", "capacity") == 0
    assert metrics.registry.get_sample_value("ranker_content_cache_entries") == 0


def test_clear_empties_the_cache_and_its_gauge() -> None:
    metrics = Metrics()
    cache = ContentCache(max_entries=10, ttl_s=60, metrics=metrics, clock=Clock())
    cache.put_many({"a": _vec(1), "b": _vec(2)}, 4)
    assert metrics.registry.get_sample_value("ranker_content_cache_entries") == 2
    cache.clear()
    assert metrics.registry.get_sample_value("ranker_content_cache_entries") == 0
    assert len(cache) == 0 and cache.get_many(["a", "b"], 4) == {}
