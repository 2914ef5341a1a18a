"""Embedding writes: one ``EmbeddingRecord`` per (user, model version), never replaced by an
older one.

The record and its newest-event timestamp live in one Redis hash per upstream model version
(``contract.versioned_embedding_key``), so an upstream rollout writes the new version beside the
old one. ``contract.WRITE_EMBEDDING_LUA`` compares the timestamps and writes atomically, so two
workers (or a replay after a crash) racing on one user always leave the embedding that saw the
most. Version-1 records (``contract.embedding_key``) are read as a fallback, never written.
"""

from __future__ import annotations

from collections.abc import Sequence

from shared_model.contract import (
    EMBEDDING_FIELD_COMPUTED,
    EMBEDDING_FIELD_RECORD,
    WRITE_EMBEDDING_LUA,
    EmbeddingRecord,
    embedding_key,
    versioned_embedding_key,
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
                [versioned_embedding_key(user_id, record.model_version)],
                [record.newest_event_ms, record.encode(), self.ttl_ms, record.computed_at_ms],
            )
        return [bool(r) for r in pipe.execute()]

    def read(self, user_id: str, model_version: str) -> EmbeddingRecord | None:
        """The user's embedding of ``model_version`` (or a version-1 record of it)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hget(versioned_embedding_key(user_id, model_version), EMBEDDING_FIELD_RECORD)
        pipe.hget(embedding_key(user_id), EMBEDDING_FIELD_RECORD)
        for raw in pipe.execute():
            if raw is not None:
                record = EmbeddingRecord.decode(raw)
                if record.model_version == model_version:
                    return record
        return None

    def computed_at(self, user_ids: Sequence[str], model_version: str) -> list[int | None]:
        """When each user's embedding of ``model_version`` was computed (None: none stored)."""
        if not user_ids:
            return []
        pipe = self.client.pipeline(transaction=False)
        for user_id in user_ids:
            pipe.hget(versioned_embedding_key(user_id, model_version), EMBEDDING_FIELD_COMPUTED)
        return [None if v is None else int(v) for v in pipe.execute()]
