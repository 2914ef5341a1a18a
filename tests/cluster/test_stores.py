"""The Redis code paths on a real cluster against the same calls on one redis-server (the
reference): history appends and loads, write-if-newer, and the ranker's one-trip read with
content keys spread over every master."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator

import pytest
import redis

from loadtests.stack.servers import RedisCluster, RedisServer
from ranker_service.settings import Settings as RankerSettings
from ranker_service.store import FeatureStore, FetchOutcome, UserData
from shared_model.contract import EmbeddingRecord, UserEvent, content_embedding_key
from upstream_service.embedding_store import EmbeddingStore
from upstream_service.history_store import HistoryStore
from upstream_service.redis_client import is_cluster

USERS = [f"store-user-{i}" for i in range(20)]
CONTENT = [f"ad-{i}" for i in range(12)]
BASE_MS = 1_750_000_000_000
_ids = itertools.count()


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with RedisCluster() as started:
        yield started


@pytest.fixture
def clients(
    cluster: RedisCluster, redis_client: redis.Redis
) -> Iterator[dict[str, redis.Redis | redis.cluster.RedisCluster]]:
    on_cluster = cluster.client()
    for node in on_cluster.get_primaries():
        on_cluster.get_redis_connection(node).flushall()
    yield {"server": redis_client, "cluster": on_cluster}
    on_cluster.close()


def _events(ts_ms: int) -> list[UserEvent]:
    return [
        UserEvent(
            event_id=f"store-ev-{next(_ids)}",
            user_id=user,
            timestamp_ms=ts_ms + i,
            action_type=action,
            item_id=f"item-{i}",
        )
        for user in USERS
        for i, action in enumerate(["impression", "click", "conversion"])
    ]


def _record(newest_ms: int, value: float) -> EmbeddingRecord:
    return EmbeddingRecord((value,) * 8, "upstream-v1", newest_ms + 5, newest_ms, 3)


def test_history_and_write_if_newer_match_one_server(clients: dict) -> None:
    assert is_cluster(clients["cluster"]) and not is_cluster(clients["server"])
    outcomes = {}
    events = _events(BASE_MS)
    for name, client in clients.items():
        history = HistoryStore(client, {"eng": 2, "imp": 5}, ttl_s=3600, count_events=True)
        store = EmbeddingStore(client, ttl_s=3600)
        first = history.append(events)
        replay = history.append(events)  # at-least-once redelivery: no duplicates
        loaded = history.load(USERS, 10)
        newer = store.write([(u, _record(BASE_MS + 10, 1.0)) for u in USERS])
        older = store.write([(u, _record(BASE_MS, 2.0)) for u in USERS])
        outcomes[name] = (
            first,
            replay,
            loaded,
            newer,
            older,
            [store.read(u, "upstream-v1") for u in USERS],
        )
    assert outcomes["cluster"] == outcomes["server"]
    first, replay, loaded, newer, older, stored = outcomes["cluster"]
    assert all(first[0]) and not any(replay[0])
    assert all(len(h.records) == 3 for h in loaded)  # eng capped at 2 + 1 impression
    assert all(newer) and not any(older)
    assert all(r is not None and r.newest_event_ms == BASE_MS + 10 for r in stored)


def _fetch(url: str, cluster: bool) -> list[UserData]:
    settings = RankerSettings(redis_url=url, redis_cluster=cluster, redis_timeout_ms=2000)

    async def run() -> list[UserData]:
        store = FeatureStore(settings)
        try:
            return [
                await store.fetch(
                    user,
                    history_limit=10,
                    read_embedding=True,
                    read_history=True,
                    content_ids=CONTENT,
                    embedding_version="upstream-v1",
                )
                for user in USERS[:5]
            ]
        finally:
            await store.aclose()

    return asyncio.run(run())


def test_ranker_read_matches_one_server(
    clients: dict, cluster: RedisCluster, redis_server: RedisServer
) -> None:
    events = _events(BASE_MS)
    for client in clients.values():
        HistoryStore(client, {"eng": 10, "imp": 10}).append(events)
        EmbeddingStore(client).write([(u, _record(BASE_MS, 1.0)) for u in USERS])
        for i, content_id in enumerate(CONTENT[:-1]):  # the last one is absent
            client.set(content_embedding_key(content_id), _record(BASE_MS, float(i)).encode())
    owners = {cluster.master_for_key(content_embedding_key(c)).port for c in CONTENT}
    assert len(owners) == 3  # the content read really spans every master

    on_cluster = _fetch(cluster.url, cluster=True)
    on_server = _fetch(redis_server.url, cluster=False)
    for a, b in zip(on_cluster, on_server, strict=True):
        assert a.outcome == b.outcome == FetchOutcome.OK
        assert (a.embedding, a.history, a.content) == (b.embedding, b.history, b.content)
        assert a.embedding is not None and a.content[CONTENT[-1]] is None
