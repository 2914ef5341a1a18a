"""Round trip of the appended contract definition the ranker reads: content_embedding_key."""

from __future__ import annotations

import pytest
import redis

from shared_model.contract import (
    ContractError,
    EmbeddingDType,
    EmbeddingRecord,
    content_embedding_key,
)


def test_content_key_layout() -> None:
    assert content_embedding_key("movie-42") == "llatte:content:movie-42"
    for bad in ("", "a{b}", "x" * 129, "tab\there"):
        with pytest.raises(ContractError):
            content_embedding_key(bad)


def test_content_record_round_trips_through_redis(redis_client: redis.Redis) -> None:
    record = EmbeddingRecord(
        (0.25, -1.5, 3.0), "minilm-v1", 1_750_000_000_000, 1_750_000_000_000, 0,
        dtype=EmbeddingDType.FLOAT32,
    )  # fmt: skip
    redis_client.set(content_embedding_key("ad-1"), record.encode())
    raw = redis_client.get(content_embedding_key("ad-1"))
    assert EmbeddingRecord.decode(raw, expected_dim=3) == record
