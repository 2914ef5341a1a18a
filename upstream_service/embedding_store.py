"""Embedding writes: one ``EmbeddingRecord`` per user, never replaced by an older one.

The record and its newest-event timestamp live in one Redis hash (``contract.embedding_key``);
``contract.WRITE_EMBEDDING_LUA`` compares the timestamps and writes atomically, so two workers
(or a replay after a crash) racing on one user always leave the embedding that saw the most.
"""

from __future__ import annotations

from collections.abc import Sequence

from shared_model.contract import (
    EMBEDDING_FIELD_RECORD,
    WRITE_EMBEDDING_LUA,
    EmbeddingRecord,
    embedding_key,
)
from upstream_service.redis_client import RedisClient, queue_script


class EmbeddingStore:
    """Args:
    client: a redis-py client (bytes responses).
    ttl_s: expiry of an embedding key after each write; 0 = never.
    """

    def __init__(self, client: RedisClient, ttl_s: int = 0) -> None:
        self.client = client
        self.ttl_ms = ttl_s * 1000
        self._write = client.register_script(WRITE_EMBEDDING_LUA)

    def write(self, items: Sequence[tuple[str, EmbeddingRecord]]) -> list[bool]:
        """Write (user_id, record) pairs in one pipelined round trip.

        Returns, per item, True when written and False when a newer embedding was kept.
        """
        if not items:
            return []
        pipe = self.client.pipeline(transaction=False)
        for user_id, record in items:
            # One key: the script runs on the user's slot.
            queue_script(
                pipe,
                self._write,
                [embedding_key(user_id)],
                [record.newest_event_ms, record.encode(), self.ttl_ms],
            )
        return [bool(r) for r in pipe.execute()]

    def read(self, user_id: str) -> EmbeddingRecord | None:
        raw = self.client.hget(embedding_key(user_id), EMBEDDING_FIELD_RECORD)
        return None if raw is None else EmbeddingRecord.decode(raw)
