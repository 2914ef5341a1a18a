"""Backfill, versioned embeddings and the age trigger, through the real worker (Tansu + Redis)."""

from __future__ import annotations

import time
import uuid

import pytest

from shared_model.contract import EmbeddingRecord, history_key, versioned_embedding_key
from tests.upstream_service.conftest import BASE_MS, make_event, wait_for
from upstream_service.backfill import progress_key, run_backfill
from upstream_service.embedding_store import EmbeddingStore
from upstream_service.embeddings import coverage, retire

USERS = [f"bf-{i}" for i in range(12)]


@pytest.fixture
def refresh_settings(settings, kafka_broker):
    name = f"refresh-{uuid.uuid4().hex[:10]}"
    kafka_broker.create_topic(name, partitions=2)
    return settings.model_copy(update={"refresh_topic": name})


def metric(worker_thread, name, labels=None) -> float:
    return worker_thread.worker.metrics.value(name, labels)


def send_histories(send, redis_client) -> None:
    """Views and clicks only (no trigger fires); the last user has impressions only."""
    events = [make_event(u, "click", BASE_MS + i) for i, u in enumerate(USERS[:-1])]
    events += [make_event(u, "view", BASE_MS + 100 + i) for i, u in enumerate(USERS)]
    send(*events)
    wait_for(
        lambda: all(redis_client.exists(history_key(u, "imp")) for u in USERS),
        30,
        "the histories",
    )


def test_backfill_encodes_every_user_with_a_history_and_resumes(
    refresh_settings, start_worker, send, redis_client
):
    worker = start_worker(refresh_topic=refresh_settings.refresh_topic)
    version = worker.worker.encoder.model_version
    send_histories(send, redis_client)
    assert worker.refreshes == []  # nothing triggered by the views and clicks

    stats = run_backfill(refresh_settings, version, client=redis_client, show_progress=False)
    assert (stats.scanned, stats.published, stats.covered) == (len(USERS), len(USERS), 0)
    store = EmbeddingStore(redis_client)
    wait_for(lambda: all(store.read(u, version) for u in USERS), 60, "every user's embedding")
    assert store.read(USERS[0], version).history_length == 2
    assert metric(worker, "upstream_backfill_requests_total", {"outcome": "accepted"}) == 12
    assert metric(worker, "upstream_backfill_lag_seconds_count") == 12
    assert metric(worker, "upstream_freshness_seconds_count") == 0  # not event freshness
    assert coverage(redis_client, [version]) == {
        "users_with_history": 12,
        version: {"users": 12, "coverage": 1.0},
    }

    # The cursor was checkpointed: a rerun (after a crash) publishes nothing more ...
    assert redis_client.hget(progress_key(version), "server") == b"done"
    again = run_backfill(refresh_settings, version, client=redis_client, show_progress=False)
    assert (again.scanned, again.published) == (0, 12)
    # ... unless restarted; a request for a version this worker does not serve is skipped.
    other = run_backfill(
        refresh_settings, "other-model", client=redis_client, show_progress=False, restart=True
    )
    assert other.published == 12
    wait_for(
        lambda: (
            metric(worker, "upstream_backfill_requests_total", {"outcome": "other_version"}) == 12
        ),
        30,
        "the other version's requests to be skipped",
    )
    wait_for(lambda: worker.worker.tracker.pending_chunks == 0, 30, "the offsets to settle")
    assert not redis_client.exists(versioned_embedding_key(USERS[0], "other-model"))


def test_versions_live_side_by_side_and_retire_removes_one(redis_client):
    store = EmbeddingStore(redis_client, ttl_s=60)
    a = EmbeddingRecord((1.0, 2.0), "model-a", BASE_MS, BASE_MS + 5, 3)
    b = EmbeddingRecord((3.0, 4.0), "model-b", BASE_MS, BASE_MS + 1, 3)  # older events: kept too
    old_b = EmbeddingRecord((5.0, 6.0), "model-b", BASE_MS, BASE_MS, 3)
    assert store.write([("side-1", a), ("side-1", b), ("side-2", a)]) == [True, True, True]
    assert store.write([("side-1", old_b)]) == [False]  # write-if-newer, per version
    assert store.read("side-1", "model-a") == a and store.read("side-1", "model-b") == b
    assert 0 < redis_client.pttl(versioned_embedding_key("side-1", "model-b")) <= 60_000
    assert retire(redis_client, "model-a") == 2
    assert store.read("side-1", "model-a") is None
    assert store.read("side-1", "model-b") == b


def test_active_user_with_an_old_embedding_is_refreshed(settings, start_worker, send, redis_client):
    worker = start_worker(refresh_max_age_s=3600)
    version = worker.worker.encoder.model_version
    store = EmbeddingStore(redis_client)
    # computed_at_ms = BASE_MS: far older than an hour by the wall clock.
    old = EmbeddingRecord((0.5,) * worker.worker.encoder.dim, version, BASE_MS, BASE_MS, 1)
    now_ms = int(time.time() * 1000)
    fresh = EmbeddingRecord((0.5,) * worker.worker.encoder.dim, version, now_ms, BASE_MS, 1)
    assert store.write([("aged", old), ("recent", fresh)]) == [True, True]
    send(make_event("aged", "view", BASE_MS + 10), make_event("recent", "view", BASE_MS + 10))
    wait_for(lambda: worker.refreshes_of("aged"), 30, "the aged user's refresh")
    assert store.read("aged", version).newest_event_ms == BASE_MS + 10
    wait_for(lambda: worker.worker.tracker.pending_chunks == 0, 30, "the worker to settle")
    assert worker.refreshes_of("recent") == []
    assert metric(worker, "upstream_triggers_total", {"reason": "age"}) == 1


def test_backfill_fills_only_spare_capacity(settings, upstream_checkpoint):
    from shared_model.contract import RefreshRequest
    from upstream_service.worker import Worker

    worker = Worker(settings.model_copy(update={"backfill_max_per_batch": 2, "metrics_port": -1}))
    try:
        chunk = worker.tracker.open({})
        version = worker.encoder.model_version
        for i in range(5):
            worker.tracker.add_dependency(chunk)
            worker._backfill.append((RefreshRequest(f"b{i}", version, BASE_MS), chunk))
        worker.batcher.submit("event-user", BASE_MS, None)
        worker._feed_backfill()
        assert len(worker.batcher) == 1  # an event-triggered refresh is pending: none handed
        assert [r.user_id for r in worker.batcher.next_batch(timeout=1)] == ["event-user"]
        worker._encoding.set()
        worker._feed_backfill()
        assert len(worker.batcher) == 0  # the encoder is busy with event work
        worker._encoding.clear()
        worker._feed_backfill()
        assert len(worker.batcher) == 2 and len(worker._backfill) == 3  # at most 2 per batch
        worker._feed_backfill(everything=True)  # a drain (shutdown, rebalance) hands out all
        assert len(worker.batcher) == 5 and not worker._backfill
    finally:
        worker.redis.close()
