"""The worker against a real Tansu broker and a real redis-server, running in a thread."""

from __future__ import annotations

import redis

from shared_model.contract import (
    SOURCE_ENGAGEMENT,
    SOURCE_IMPRESSION,
    ActionType,
    EmbeddingDType,
    EmbeddingRecord,
    HistoryRecord,
    embedding_key,
    history_key,
)
from tests.upstream_service.conftest import BASE_MS, make_event, wait_for


def read_embedding(client: redis.Redis, user_id: str) -> EmbeddingRecord | None:
    raw = client.hget(embedding_key(user_id), "record")
    return None if raw is None else EmbeddingRecord.decode(raw)


def test_conversion_produces_embedding_with_metadata(start_worker, send, redis_client):
    worker = start_worker()
    events = [
        make_event("alice", "view", BASE_MS + 1, surface="reels"),
        make_event("alice", "click", BASE_MS + 2),
        make_event("alice", "conversion", BASE_MS + 3, value=9.5),
    ]
    send(*events)
    record = wait_for(lambda: read_embedding(redis_client, "alice"), 30, "alice's embedding")
    assert record.model_version == worker.worker.encoder.model_version
    assert record.newest_event_ms == BASE_MS + 3
    assert record.history_length == 3
    assert record.dtype is EmbeddingDType.FLOAT16
    assert len(record.vector) == worker.worker.encoder.dim
    assert any(v != 0 for v in record.vector)
    ttl_ms = redis_client.pttl(embedding_key("alice"))
    assert 0 < ttl_ms <= worker.worker.settings.embedding_ttl_s * 1000
    # The history is readable through the contract: views and engagements in their own sets.
    imp = redis_client.zrange(history_key("alice", SOURCE_IMPRESSION), 0, -1)
    eng = redis_client.zrange(history_key("alice", SOURCE_ENGAGEMENT), 0, -1)
    assert [HistoryRecord.decode(m).action_type for m in imp] == [ActionType.VIEW]
    assert [HistoryRecord.decode(m).action_type for m in eng] == [
        ActionType.CLICK,
        ActionType.CONVERSION,
    ]
