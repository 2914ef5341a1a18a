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
    versioned_embedding_key,
)
from tests.upstream_service.conftest import BASE_MS, make_event, wait_for


def read_embedding(client: redis.Redis, user_id: str) -> EmbeddingRecord | None:
    # The worker writes one key per model version (contract v2); these tests run one version.
    keys = list(client.scan_iter(match=embedding_key(user_id) + ":*"))
    raw = client.hget(keys[0], "record") if keys else None
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
    key = versioned_embedding_key("alice", record.model_version)
    ttl_ms = redis_client.pttl(key)
    assert 0 < ttl_ms <= worker.worker.settings.embedding_ttl_s * 1000
    # The history is readable through the contract: views and engagements in their own sets.
    imp = redis_client.zrange(history_key("alice", SOURCE_IMPRESSION), 0, -1)
    eng = redis_client.zrange(history_key("alice", SOURCE_ENGAGEMENT), 0, -1)
    assert [HistoryRecord.decode(m).action_type for m in imp] == [ActionType.VIEW]
    assert [HistoryRecord.decode(m).action_type for m in eng] == [
        ActionType.CLICK,
        ActionType.CONVERSION,
    ]


def metric(worker_thread, name: str, labels: dict[str, str] | None = None) -> float:
    return worker_thread.worker.metrics.value(name, labels)


def settled(worker_thread) -> bool:
    """Nothing pending or in flight, and every polled offset committed."""
    w = worker_thread.worker
    return len(w.batcher) == 0 and w.tracker.pending_chunks == 0


def test_views_append_history_but_trigger_nothing(start_worker, send, redis_client):
    worker = start_worker()
    views = [make_event("bob", "view", BASE_MS + i) for i in range(5)]
    send(
        *views,
        make_event("bob", "impression", BASE_MS + 10),
        make_event("bob", "click", BASE_MS + 11),
    )
    # A conversion of another user afterwards: once it is encoded, bob's events were handled.
    send(make_event("carol", "conversion", BASE_MS + 20))
    wait_for(lambda: read_embedding(redis_client, "carol"), 30, "carol's embedding")
    assert redis_client.zcard(history_key("bob", SOURCE_IMPRESSION)) == 6
    assert redis_client.zcard(history_key("bob", SOURCE_ENGAGEMENT)) == 1
    assert read_embedding(redis_client, "bob") is None
    assert worker.refreshes_of("bob") == []
    assert metric(worker, "upstream_triggers_total", {"reason": "action"}) == 1
    assert metric(worker, "upstream_events_consumed_total", {"action_type": "view"}) == 5


def test_burst_of_conversions_coalesces_into_few_encodes(start_worker, send, redis_client):
    worker = start_worker(batch_max_wait_ms=200)
    burst = [make_event("dave", "conversion", BASE_MS + i, item_id=f"ad-{i}") for i in range(50)]
    send(*burst)
    last = burst[-1].timestamp_ms
    wait_for(
        lambda: (r := read_embedding(redis_client, "dave")) and r.newest_event_ms == last,
        30,
        "an embedding that saw the last conversion",
    )
    wait_for(lambda: settled(worker), 30, "the worker to settle")
    encodes = worker.refreshes_of("dave")
    assert 1 <= len(encodes) <= 10  # far fewer than 50
    assert metric(worker, "upstream_triggers_coalesced_total") >= 40
    final = read_embedding(redis_client, "dave")
    assert final.history_length == min(50, worker.worker.encoder.history_length)
    assert final == EmbeddingRecord.decode(encodes[-1].record.encode())  # the last encode won
    # Every trigger is accounted for in the freshness histogram.
    assert metric(worker, "upstream_freshness_seconds_count") == 50


def test_malformed_events_go_to_dead_letter_topic(start_worker, send, redis_client, dlq_consumer):
    worker = start_worker()
    not_json = b"{this is not json"
    bad_action = make_event("erin", "click", BASE_MS).encode().replace(b'"click"', b'"teleport"')
    send((b"erin", not_json), (b"erin", bad_action), make_event("erin", "conversion", BASE_MS + 1))
    record = wait_for(lambda: read_embedding(redis_client, "erin"), 30, "erin's embedding")
    assert record.history_length == 1  # only the good event entered the history

    dead: list = []

    def collect() -> bool:
        for batch in dlq_consumer.poll(timeout_ms=200).values():
            dead.extend(batch)
        return len(dead) >= 2

    wait_for(collect, 30, "two dead letters")
    assert [d.value for d in dead] == [not_json, bad_action]
    reasons = [dict(d.headers)["dlq.reason"].decode() for d in dead]
    assert "not valid UTF-8 JSON" in reasons[0]
    assert "teleport" in reasons[1]
    assert all(d.key == b"erin" for d in dead)
    assert metric(worker, "upstream_events_invalid_total") == 2


def test_replayed_event_is_stored_once(start_worker, send, redis_client):
    worker = start_worker()
    event = make_event("frank", "conversion", BASE_MS + 5)
    send(event, event)
    wait_for(lambda: metric(worker, "upstream_events_duplicate_total") == 1, 30, "the duplicate")
    wait_for(lambda: settled(worker), 30, "the worker to settle")
    assert redis_client.zcard(history_key("frank", SOURCE_ENGAGEMENT)) == 1
    assert read_embedding(redis_client, "frank").history_length == 1


def test_older_embedding_never_replaces_newer(start_worker, send, redis_client, settings):
    from upstream_service.embedding_store import EmbeddingStore

    # The rule holds per model version (contract v2): a newer embedding of the worker's own
    # version is kept, and another version's embedding beside it is never touched.
    worker = start_worker()
    version = worker.worker.encoder.model_version
    newer = EmbeddingRecord((1.0,) * 40, version, BASE_MS, BASE_MS + 1_000_000, 7)
    other = EmbeddingRecord((2.0,) * 40, "other-model", BASE_MS, BASE_MS - 1, 7)
    assert EmbeddingStore(redis_client).write([("gina", newer), ("gina", other)]) == [True, True]
    send(make_event("gina", "conversion", BASE_MS + 10))
    wait_for(lambda: worker.refreshes_of("gina"), 30, "gina's refresh")
    assert worker.refreshes_of("gina")[0].written is False
    assert EmbeddingStore(redis_client).read("gina", version) == newer
    assert EmbeddingStore(redis_client).read("gina", "other-model") == other
    assert metric(worker, "upstream_embeddings_stale_total") == 1


def test_graceful_stop_commits_offsets(start_worker, send, redis_client):
    first = start_worker()
    send(make_event("hank", "conversion", BASE_MS + 1))
    wait_for(lambda: read_embedding(redis_client, "hank"), 30, "hank's embedding")
    first.stop()
    second = start_worker()
    send(make_event("ivy", "conversion", BASE_MS + 2))
    wait_for(lambda: read_embedding(redis_client, "ivy"), 30, "ivy's embedding")
    wait_for(lambda: settled(second), 30, "the worker to settle")
    # The second worker resumed after the committed offset: hank's event was not redelivered.
    assert metric(second, "upstream_events_consumed_total", {"action_type": "conversion"}) == 1
    assert second.refreshes_of("hank") == []


def test_two_workers_split_partitions_and_lose_nothing(start_worker, send, redis_client):
    first = start_worker()
    before = [make_event(f"early-{i}", "conversion", BASE_MS + i) for i in range(20)]
    send(*before)
    second = start_worker()  # joins the group: the first gives up a partition mid-stream
    wait_for(
        lambda: first.worker._consumer.assignment() and second.worker._consumer.assignment(),
        30,
        "both workers to own a partition",
    )
    after = [make_event(f"late-{i}", "conversion", BASE_MS + 100 + i) for i in range(20)]
    send(*after)
    for e in before + after:
        wait_for(lambda e=e: read_embedding(redis_client, e.user_id), 30, f"{e.user_id}")
    assert first.worker._consumer.assignment().isdisjoint(second.worker._consumer.assignment())
    assert second.refreshes and first.refreshes
