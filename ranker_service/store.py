"""Redis reads: the user's upstream embedding, recent history and content vectors, in one trip.

``redis.asyncio`` on the event loop rather than a sync client in the inference thread: the
Redis wait of one request then overlaps the model time of another, and the per-request budget
is a plain ``asyncio.timeout`` that cancels the read (redis-py drops a connection cancelled
mid-reply, so a late answer can never be read by the next request). A sync client in the
worker would serialise every Redis wait behind the single inference thread.

This module only moves bytes; decoding (which can fail on a corrupt record) lives in
``features.py`` / ``records.py`` and runs in the worker thread. The history is read without
scores: the score is the record's own ``timestamp_ms``, and 800 scores each sent as text and
parsed back into a float cost more than the records themselves. With ``hiredis`` installed
(a dependency) redis-py parses replies in C.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from ranker_service.redis_client import REDIS_ERRORS, connect_redis, is_cluster
from ranker_service.settings import Settings
from shared_model.contract import (
    EMBEDDING_FIELD_RECORD,
    HISTORY_SOURCES,
    content_embedding_key,
    embedding_key,
    history_key,
    versioned_embedding_key,
)

log = logging.getLogger(__name__)


class FetchOutcome(StrEnum):
    OK = "ok"
    TIMEOUT = "timeout"  # no answer within the budget
    UNAVAILABLE = "unavailable"  # connection refused, reset, auth failure, ...
    SKIPPED = "skipped"  # nothing to read


@dataclass
class UserData:
    """Raw bytes as Redis returned them; empty when the read failed or was not asked for."""

    outcome: FetchOutcome
    seconds: float
    embedding: bytes | None = None
    # per source, oldest first: encoded HistoryRecords (the score is their timestamp_ms)
    history: list[list[bytes]] = field(default_factory=list)
    content: dict[str, bytes | None] = field(default_factory=dict)


class FeatureStore:
    """The ranker's read side of the Redis contract."""

    def __init__(self, settings: Settings) -> None:
        self.budget_s = settings.redis_budget_ms / 1000
        self.client = connect_redis(settings, self.budget_s)
        self.cluster = is_cluster(self.client)

    async def fetch(
        self,
        user_id: str,
        *,
        history_limit: int,
        read_embedding: bool,
        read_history: bool,
        content_ids: Sequence[str] = (),
        embedding_version: str | None = None,
    ) -> UserData:
        """One pipelined round trip; never raises for Redis trouble (see ``outcome``).

        ``embedding_version`` is the upstream model version the ranker was trained with: its
        embedding key is read beside the version-1 key (same slot), and the first present wins.
        """
        start = time.perf_counter()
        if not (read_embedding or read_history or content_ids):
            return UserData(FetchOutcome.SKIPPED, 0.0)
        pipe = self.client.pipeline(transaction=False)
        versioned = read_embedding and embedding_version is not None
        if versioned:
            pipe.hget(versioned_embedding_key(user_id, embedding_version), EMBEDDING_FIELD_RECORD)
        if read_embedding:
            pipe.hget(embedding_key(user_id), EMBEDDING_FIELD_RECORD)
        if read_history:
            for source in HISTORY_SOURCES:
                # Each source capped separately (paper: per-source horizon), oldest first.
                pipe.zrange(history_key(user_id, source), -history_limit, -1)
        if content_ids:
            keys = [content_embedding_key(c) for c in content_ids]
            if self.cluster:
                for key in keys:  # content keys span slots: no MGET; one GET each, per node
                    pipe.get(key)
            else:
                pipe.mget(keys)
        try:
            async with asyncio.timeout(self.budget_s):
                replies = await pipe.execute()
        except TimeoutError:
            return UserData(FetchOutcome.TIMEOUT, time.perf_counter() - start)
        except REDIS_ERRORS as e:
            log.debug("redis read failed: %s", e)
            return UserData(FetchOutcome.UNAVAILABLE, time.perf_counter() - start)
        data = UserData(FetchOutcome.OK, time.perf_counter() - start)
        replies = list(replies)
        if versioned:
            data.embedding = replies.pop(0)
        if read_embedding:
            legacy = replies.pop(0)
            data.embedding = legacy if data.embedding is None else data.embedding
        if read_history:
            data.history = [replies.pop(0) for _ in HISTORY_SOURCES]
        if content_ids:
            values = replies if self.cluster else replies.pop(0)
            data.content = dict(zip(content_ids, values, strict=True))
        return data

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(max(self.budget_s, 0.25)):
                return bool(await self.client.ping())
        except (TimeoutError, *REDIS_ERRORS):
            return False

    async def aclose(self) -> None:
        await self.client.aclose()
