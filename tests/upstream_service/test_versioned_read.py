"""The ranker's read side of versioned embeddings: its trained version's key, else version 1."""

from __future__ import annotations

import asyncio

from ranker_service.settings import Settings as RankerSettings
from ranker_service.store import FeatureStore, FetchOutcome
from shared_model.contract import (
    EMBEDDING_FIELD_NEWEST,
    EMBEDDING_FIELD_RECORD,
    EmbeddingRecord,
    embedding_key,
)
from upstream_service.embedding_store import EmbeddingStore

TS = 1_750_000_000_000


def fetch(redis_server, user_id: str, version: str | None) -> bytes | None:
    async def go() -> bytes | None:
        store = FeatureStore(RankerSettings(redis_url=redis_server.url, redis_budget_ms=1000))
        try:
            data = await store.fetch(
                user_id,
                history_limit=4,
                read_embedding=True,
                read_history=True,
                embedding_version=version,
            )
            assert data.outcome is FetchOutcome.OK
            return data.embedding
        finally:
            await store.aclose()

    return asyncio.run(go())


def test_ranker_reads_its_version_beside_the_version_1_record(redis_server, redis_client):
    a = EmbeddingRecord((1.0, 2.0), "model-a", TS, TS, 3)
    b = EmbeddingRecord((3.0, 4.0), "model-b", TS, TS, 3)
    legacy = EmbeddingRecord((5.0, 6.0), "model-a", TS, TS - 1, 3)
    redis_client.hset(
        embedding_key("reader"),
        mapping={EMBEDDING_FIELD_RECORD: legacy.encode(), EMBEDDING_FIELD_NEWEST: TS - 1},
    )
    # Only a version-1 record: it is what the ranker gets (its model_version decides its use).
    assert fetch(redis_server, "reader", "model-a") == legacy.encode()
    EmbeddingStore(redis_client).write([("reader", a), ("reader", b)])
    assert fetch(redis_server, "reader", "model-a") == a.encode()
    assert fetch(redis_server, "reader", "model-b") == b.encode()
    assert fetch(redis_server, "reader", None) == legacy.encode()  # no version: version 1 only
    assert fetch(redis_server, "nobody", "model-b") is None
