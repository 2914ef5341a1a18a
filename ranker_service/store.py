"""Redis reads: the user's upstream embedding, recent history and content vectors, in one trip.

The read runs on the event loop rather than in the inference thread: the Redis wait of one
request then overlaps the model time of another, and the per-request budget is a plain
``asyncio.timeout`` that cancels the read. On one Redis server every request's read shares one
pipelined connection (``redis_mux.MultiplexedRedis``: a late reply is parsed and dropped, never
read by the next request); on a Redis Cluster, or with ``RANKER_REDIS_READER=redis-py`` (the
reference), redis-py's pipeline sends it (redis-py drops a connection cancelled mid-reply).

This module only moves bytes; decoding (which can fail on a corrupt record) lives in
``features.py`` / ``records.py`` and runs in the worker thread. The history is read without
scores: the score is the record's own ``timestamp_ms``, and 800 scores each sent as text and
parsed back into a float cost more than the records themselves. hiredis (a dependency) parses
the replies in C on both paths.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from ranker_service.redis_client import REDIS_ERRORS, RedisClient, connect_redis
from ranker_service.redis_mux import Command, MultiplexedRedis
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
        self.mux: MultiplexedRedis | None = None
        self.client: RedisClient | None = None
        self.cluster = settings.redis_cluster
        # "auto" reads a cluster through redis-py's cluster client (settings refuse "multiplexed")
        if settings.redis_reader == "redis-py" or self.cluster:
            self.client = connect_redis(settings, self.budget_s)
        else:
            self.mux = MultiplexedRedis(
                settings.redis_url.get_secret_value(),
                connect_timeout_s=max(self.budget_s, 0.001),
                stale_s=max(settings.redis_stale_s, self.budget_s),
                tls_ca_file=settings.redis_tls_ca_file,
            )

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
        commands: list[Command] = []
        versioned = read_embedding and embedding_version is not None
        if versioned:
            key = versioned_embedding_key(user_id, embedding_version)  # type: ignore[arg-type]
            commands.append(("HGET", key, EMBEDDING_FIELD_RECORD))
        if read_embedding:
            commands.append(("HGET", embedding_key(user_id), EMBEDDING_FIELD_RECORD))
        if read_history:
            for source in HISTORY_SOURCES:
                # Each source capped separately (paper: per-source horizon), oldest first.
                commands.append(("ZRANGE", history_key(user_id, source), -history_limit, -1))
        if content_ids:
            keys = [content_embedding_key(c) for c in content_ids]
            if self.cluster:  # content keys span slots: no MGET; one GET each, per node
                commands += [("GET", key) for key in keys]
            else:
                commands.append(("MGET", *keys))
        try:
            async with asyncio.timeout(self.budget_s):
                replies = await self._send(commands)
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

    async def _send(self, commands: list[Command]) -> list:
        """One round trip: the multiplexed connection, or a redis-py pipeline."""
        if self.mux is not None:
            return await self.mux.execute(commands)
        assert self.client is not None
        pipe = self.client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return await pipe.execute()

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(max(self.budget_s, 0.25)):
                if self.mux is not None:
                    return await self.mux.ping()
                assert self.client is not None
                return bool(await self.client.ping())
        except (TimeoutError, *REDIS_ERRORS):
            return False

    async def aclose(self) -> None:
        if self.mux is not None:
            await self.mux.aclose()
        if self.client is not None:
            await self.client.aclose()
