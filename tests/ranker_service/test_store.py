"""FeatureStore, the ranker's one Redis round trip, against a real redis-server through both
readers (the multiplexed one and redis-py's pipeline): which keys it reads, which reply becomes
which field, and what it says when Redis is not there or has nothing to be asked."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator

import pytest
import redis

from loadtests.stack.servers import LOOPBACK, RedisServer, free_port
from ranker_service import store as store_module
from ranker_service.redis_client import REDIS_ERRORS
from ranker_service.settings import Settings
from ranker_service.store import FeatureStore, FetchOutcome, UserData
from shared_model.contract import (
    EMBEDDING_FIELD_RECORD,
    HISTORY_SOURCES,
    content_embedding_key,
    embedding_key,
    history_key,
    versioned_embedding_key,
)
from tests.clocks import StepClock

READERS = ("multiplexed", "redis-py")


def _with_store(
    url: str, reader: str, use: Callable[[FeatureStore], Awaitable], budget_ms: float = 1000
):
    async def go():
        settings = Settings(redis_url=url, redis_reader=reader, redis_budget_ms=budget_ms)
        store = FeatureStore(settings)
        try:
            return await use(store)
        finally:
            await store.aclose()

    return asyncio.run(go())


def _fetch(url: str, reader: str, **kw) -> UserData:
    kw = {"history_limit": 3, "read_embedding": True, "read_history": True, **kw}
    return _with_store(url, reader, lambda store: store.fetch("u1", **kw))


@contextlib.contextmanager
def _silent_server() -> Iterator[str]:
    """The URL of a server that accepts connections (its backlog does) and never replies."""
    with socket.socket() as silent:
        silent.bind((LOOPBACK, 0))
        silent.listen(8)
        yield f"redis://{LOOPBACK}:{silent.getsockname()[1]}/0"


def _seed(client: redis.Redis) -> None:
    client.hset(embedding_key("u1"), EMBEDDING_FIELD_RECORD, b"legacy")
    for s, source in enumerate(HISTORY_SOURCES):
        members = {f"{source}-{i}".encode(): 100 * s + i for i in range(5)}
        client.zadd(history_key("u1", source), members)
    client.set(content_embedding_key("ad-1"), b"c1")
    client.set(content_embedding_key("ad-3"), b"c3")


@pytest.mark.parametrize("reader", READERS)
def test_every_reply_lands_in_its_field(
    redis_server: RedisServer, redis_client: redis.Redis, reader: str
) -> None:
    _seed(redis_client)
    redis_client.hset(versioned_embedding_key("u1", "m2"), EMBEDDING_FIELD_RECORD, b"m2")
    data = _fetch(
        redis_server.url, reader, embedding_version="m2", content_ids=["ad-3", "ad-2", "ad-1"]
    )
    assert data.outcome is FetchOutcome.OK and data.seconds > 0
    assert data.embedding == b"m2"  # the trained version's record wins over version 1
    # per source, in HISTORY_SOURCES order, the newest history_limit members, oldest first
    assert data.history == [[f"{s}-{i}".encode() for i in (2, 3, 4)] for s in HISTORY_SOURCES]
    assert data.content == {"ad-3": b"c3", "ad-2": None, "ad-1": b"c1"}


@pytest.mark.parametrize("reader", READERS)
def test_version_1_record_when_the_versioned_one_is_missing_or_not_asked_for(
    redis_server: RedisServer, redis_client: redis.Redis, reader: str
) -> None:
    _seed(redis_client)
    assert _fetch(redis_server.url, reader, embedding_version="m2").embedding == b"legacy"
    assert _fetch(redis_server.url, reader).embedding == b"legacy"
    assert _fetch(redis_server.url, reader, read_embedding=False).embedding is None


@pytest.mark.parametrize("reader", READERS)
def test_only_what_is_asked_for_is_read(
    redis_server: RedisServer, redis_client: redis.Redis, reader: str
) -> None:
    _seed(redis_client)
    data = _fetch(redis_server.url, reader, read_history=False, content_ids=["ad-1"])
    assert (data.embedding, data.history, data.content) == (b"legacy", [], {"ad-1": b"c1"})
    data = _fetch(redis_server.url, reader, read_embedding=False)
    assert data.embedding is None and len(data.history) == len(HISTORY_SOURCES)
    assert data.content == {}


@pytest.mark.parametrize("reader", READERS)
def test_nothing_to_read_makes_no_round_trip(reader: str) -> None:
    # Nothing listens there: a read that went out would come back unavailable.
    url = f"redis://{LOOPBACK}:{free_port()}/0"
    data = _fetch(url, reader, read_embedding=False, read_history=False)
    assert data == UserData(FetchOutcome.SKIPPED, 0.0)
    data = _fetch(url, reader, read_embedding=False, read_history=False, content_ids=["ad-1"])
    assert data.outcome is FetchOutcome.UNAVAILABLE


@pytest.mark.parametrize("reader", READERS)
def test_a_server_that_never_answers_is_a_timeout(reader: str) -> None:
    with _silent_server() as url:

        async def use(store: FeatureStore) -> tuple[UserData, bool]:
            data = await store.fetch("u1", history_limit=3, read_embedding=True, read_history=True)
            return data, await store.ping()

        data, pong = _with_store(url, reader, use, budget_ms=200)
    assert data.outcome is FetchOutcome.TIMEOUT
    assert (data.embedding, data.history, data.content) == (None, [], {})
    assert pong is False


@pytest.mark.parametrize("reader", READERS)
def test_ping_says_whether_redis_answers(redis_server: RedisServer, reader: str) -> None:
    redis_server.start()  # no-op unless an earlier test left it stopped
    assert _with_store(redis_server.url, reader, lambda store: store.ping()) is True
    url = f"redis://{LOOPBACK}:{free_port()}/0"
    assert _with_store(url, reader, lambda store: store.ping()) is False


@pytest.mark.parametrize("reader", READERS)
def test_the_reader_is_the_one_asked_for_with_the_budget_in_seconds(reader: str) -> None:
    async def use(store: FeatureStore) -> tuple[bool, bool, float]:
        return store.mux is not None, store.client is not None, store.budget_s

    url = f"redis://{LOOPBACK}:{free_port()}/0"
    multiplexed = reader == "multiplexed"
    assert _with_store(url, reader, use, budget_ms=250) == (multiplexed, not multiplexed, 0.25)


@pytest.mark.parametrize("reader", READERS)
def test_seconds_is_the_time_the_read_took_whatever_its_outcome(
    redis_server: RedisServer,
    redis_client: redis.Redis,
    reader: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(store_module, "time", StepClock(0.25, 1000.0))
    _seed(redis_client)
    ok = _fetch(redis_server.url, reader)
    assert (ok.outcome, ok.seconds) == (FetchOutcome.OK, 0.25)  # one reading before, one after
    dead = f"redis://{LOOPBACK}:{free_port()}/0"
    with caplog.at_level(logging.DEBUG, logger=store_module.__name__):
        gone = _fetch(dead, reader)
    assert (gone.outcome, gone.seconds) == (FetchOutcome.UNAVAILABLE, 0.25)
    (record,) = [r for r in caplog.records if r.name == store_module.__name__]
    error = record.args[0]  # what went wrong, as the reader raised it
    assert isinstance(error, REDIS_ERRORS) and record.getMessage() == f"redis read failed: {error}"
    with _silent_server() as url:
        late = _with_store(
            url, reader, lambda s: s.fetch("u1", history_limit=3, read_embedding=True,
                                            read_history=True), budget_ms=100,
        )  # fmt: skip
    assert (late.outcome, late.seconds) == (FetchOutcome.TIMEOUT, 0.25)
