"""EmbeddingStore on a real redis-server: TTLs, computed_at, and the write-if-newer answers."""

from __future__ import annotations

import redis

from shared_model.contract import EmbeddingRecord, versioned_embedding_key
from upstream_service.embedding_store import EmbeddingStore

BASE_MS = 1_750_000_000_000


def rec(version: str, computed: int, newest: int) -> EmbeddingRecord:
    return EmbeddingRecord((0.5,) * 4, version, computed, newest, 2)


def test_write_sets_the_ttl_in_seconds(redis_client: redis.Redis):
    EmbeddingStore(redis_client, ttl_s=30).write([("u", rec("v1", BASE_MS, BASE_MS))])
    ttl_ms = redis_client.pttl(versioned_embedding_key("u", "v1"))
    assert 28_000 < ttl_ms <= 30_000


def test_without_a_ttl_the_embedding_never_expires(redis_client: redis.Redis):
    EmbeddingStore(redis_client).write([("u", rec("v1", BASE_MS, BASE_MS))])
    assert redis_client.pttl(versioned_embedding_key("u", "v1")) == -1  # no expiry


def test_computed_at_per_user_and_version(redis_client: redis.Redis):
    store = EmbeddingStore(redis_client)
    assert store.computed_at([], "v1") == []
    written = store.write(
        [("a", rec("v1", BASE_MS + 1, BASE_MS)), ("b", rec("v2", BASE_MS + 2, BASE_MS))]
    )
    assert written == [True, True]
    assert store.computed_at(["a", "b", "c"], "v1") == [BASE_MS + 1, None, None]
    assert store.computed_at(["b", "a"], "v2") == [BASE_MS + 2, None]


def test_write_answers_per_item_in_order(redis_client: redis.Redis):
    store = EmbeddingStore(redis_client)
    assert store.write([]) == []
    store.write([("b", rec("v1", BASE_MS, BASE_MS + 50))])
    got = store.write(
        [("a", rec("v1", BASE_MS, BASE_MS + 10)), ("b", rec("v1", BASE_MS, BASE_MS + 20))]
    )
    assert got == [True, False]  # b already holds a newer embedding
    assert store.read("b", "v1").newest_event_ms == BASE_MS + 50
    assert store.read("c", "v1") is None
