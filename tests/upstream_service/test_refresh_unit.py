"""The worker's refresh path and offset commits without Kafka: ``_refresh`` on a real
redis-server with a tiny encoder, ``_commit`` against a recording consumer, ``_retry`` with a
recorded backoff. The guarantee under test: a poll's offsets become committable only after the
embedding writes it waits for returned."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from shared_model.contract import EmbeddingRecord, events_seen_key
from tests.upstream_service.conftest import BASE_MS, make_event
from upstream_service.batcher import RefreshRequest
from upstream_service.settings import Settings
from upstream_service.worker import RefreshResult, ShutdownAbortedError, Worker

TP0, TP1 = TopicPartition("events", 0), TopicPartition("events", 1)


@pytest.fixture
def worker(redis_server, redis_client, upstream_checkpoint: Path) -> Worker:
    settings = Settings(
        kafka_bootstrap_servers="127.0.0.1:1",  # never contacted
        redis_url=redis_server.url,
        checkpoint_path=upstream_checkpoint,
        metrics_port=-1,
        refresh_every_n_events=100,  # keeps the count-trigger counter
    )
    w = Worker(settings)
    w.results: list[RefreshResult] = []
    w.on_refresh = w.results.append
    yield w
    w.redis.close()


def request(user_id: str, *triggers: int, chunks: set[int]) -> RefreshRequest:
    return RefreshRequest(user_id, list(triggers), time.monotonic(), set(chunks))


def test_refresh_writes_then_resolves_the_chunks(worker: Worker, redis_client: redis.Redis):
    events = [
        make_event("alice", "view", BASE_MS + 1),
        make_event("alice", "conversion", BASE_MS + 5),
        make_event("bob", "click", BASE_MS + 2),
    ]
    worker.history.append(events)
    chunk = worker.tracker.open({TP0: 3})
    worker.tracker.add_dependency(chunk)
    worker.tracker.add_dependency(chunk)
    worker.tracker.seal(chunk)
    seen_at_write: list[dict] = []
    write = worker.embeddings.write

    def recording_write(items):
        seen_at_write.append(worker.tracker.take_committable())
        return write(items)

    worker.embeddings.write = recording_write
    worker._refresh(
        [
            request("alice", BASE_MS + 5, chunks={chunk}),
            request("bob", BASE_MS + 2, chunks={chunk}),
        ]
    )
    assert seen_at_write == [{}]  # nothing committable while the write was under way
    assert worker.tracker.take_committable() == {TP0: 3}
    version = worker.encoder.model_version
    alice = worker.embeddings.read("alice", version)
    bob = worker.embeddings.read("bob", version)
    assert alice.newest_event_ms == BASE_MS + 5 and alice.history_length == 2
    assert bob.newest_event_ms == BASE_MS + 2 and bob.history_length == 1
    assert [(r.user_id, r.written, r.trigger_times_ms) for r in worker.results] == [
        ("alice", True, [BASE_MS + 5]),
        ("bob", True, [BASE_MS + 2]),
    ]
    assert worker.results[0].record.encode() == alice.encode()
    assert worker.metrics.value("upstream_embeddings_written_total") == 2
    assert worker.metrics.value("upstream_embeddings_stale_total") == 0
    assert worker.metrics.value("upstream_freshness_seconds_count") == 2
    # The count-trigger counters were consumed by what the encode covered.
    assert int(redis_client.get(events_seen_key("alice"))) == 0
    assert int(redis_client.get(events_seen_key("bob"))) == 0


def test_refresh_of_a_user_without_history_resolves_without_writing(worker: Worker):
    chunk = worker.tracker.open({TP1: 9})
    worker.tracker.add_dependency(chunk)
    worker.tracker.seal(chunk)
    worker._refresh([request("nobody", BASE_MS, chunks={chunk})])
    assert worker.tracker.take_committable() == {TP1: 9}
    assert worker.embeddings.read("nobody", worker.encoder.model_version) is None
    assert worker.results == []
    assert worker.metrics.value("upstream_embeddings_written_total") == 0


def test_refresh_keeps_a_newer_embedding_and_counts_it_stale(worker: Worker):
    worker.history.append([make_event("carol", "conversion", BASE_MS + 1)])
    version = worker.encoder.model_version
    newer = EmbeddingRecord((0.25,) * worker.encoder.dim, version, BASE_MS + 60, BASE_MS + 50, 7)
    worker.embeddings.write([("carol", newer)])
    chunk = worker.tracker.open({TP0: 1})
    worker.tracker.add_dependency(chunk)
    worker.tracker.seal(chunk)
    worker._refresh([request("carol", BASE_MS + 1, chunks={chunk})])
    assert worker.embeddings.read("carol", version).newest_event_ms == BASE_MS + 50
    assert [r.written for r in worker.results] == [False]
    assert worker.metrics.value("upstream_embeddings_stale_total") == 1
    assert worker.metrics.value("upstream_embeddings_written_total") == 0
    assert worker.metrics.value("upstream_freshness_seconds_count") == 0
    assert worker.tracker.take_committable() == {TP0: 1}  # durable either way


def test_refresh_retries_a_failed_write_before_resolving(worker: Worker, monkeypatch):
    worker.history.append([make_event("dave", "conversion", BASE_MS)])
    chunk = worker.tracker.open({TP0: 4})
    worker.tracker.add_dependency(chunk)
    worker.tracker.seal(chunk)
    write, calls = worker.embeddings.write, []

    def flaky_write(items):
        calls.append(worker.tracker.take_committable())
        if len(calls) == 1:
            raise redis.ConnectionError("down")
        return write(items)

    worker.embeddings.write = flaky_write
    monkeypatch.setattr(worker._abort, "wait", lambda delay: False)  # no real backoff sleep
    worker._refresh([request("dave", BASE_MS, chunks={chunk})])
    assert calls == [{}, {}]
    assert (
        worker.metrics.value("upstream_redis_errors_total", {"operation": "embedding_write"}) == 1
    )
    assert worker.tracker.take_committable() == {TP0: 4}


def test_retry_backs_off_doubling_up_to_five_seconds(worker: Worker, monkeypatch):
    delays: list[float] = []
    monkeypatch.setattr(worker._abort, "wait", lambda delay: delays.append(delay))
    failures = iter(range(9))

    def op():
        if next(failures, None) is not None:
            raise redis.TimeoutError("slow")
        return "ok"

    errors = worker.metrics.redis_errors
    assert worker._retry(op, "history_load", errors) == "ok"
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]
    assert redis_errors(worker, "history_load") == 9


def test_retry_gives_up_once_the_shutdown_deadline_passed(worker: Worker):
    worker._abort.set()

    def op():
        raise redis.ConnectionError("down")

    with pytest.raises(ShutdownAbortedError, match="embedding_write"):
        worker._retry(op, "embedding_write", worker.metrics.redis_errors)
    assert (
        worker.metrics.value("upstream_redis_errors_total", {"operation": "embedding_write"}) == 1
    )


def redis_errors(worker: Worker, operation: str) -> float:
    return worker.metrics.value("upstream_redis_errors_total", {"operation": operation})


class RecordingConsumer:
    def __init__(self, fail: bool = False) -> None:
        self.commits: list[dict] = []
        self.fail = fail

    def commit(self, offsets: dict) -> None:
        if self.fail:
            raise KafkaError("coordinator moved")
        self.commits.append(offsets)


def ready(worker: Worker, offsets: dict[TopicPartition, int]) -> None:
    chunk = worker.tracker.open(offsets)
    worker.tracker.seal(chunk)


def test_commit_sends_the_ready_offsets_once(worker: Worker):
    worker._consumer = consumer = RecordingConsumer()
    worker._commit()
    assert consumer.commits == []  # nothing ready: no commit at all
    ready(worker, {TP0: 5, TP1: 8})
    worker._commit()
    worker._commit()
    assert consumer.commits == [
        {TP0: OffsetAndMetadata(5, "", -1), TP1: OffsetAndMetadata(8, "", -1)}
    ]
    assert worker.metrics.value("upstream_offset_commits_total") == 1


def test_commit_of_revoked_partitions_keeps_the_others_ready(worker: Worker):
    worker._consumer = consumer = RecordingConsumer()
    ready(worker, {TP0: 5, TP1: 8})
    worker._commit(only={TP1})
    assert consumer.commits == [{TP1: OffsetAndMetadata(8, "", -1)}]
    assert worker.tracker.take_committable() == {TP0: 5}


def test_a_failed_commit_is_retried_unless_final(worker: Worker):
    worker._consumer = RecordingConsumer(fail=True)
    ready(worker, {TP0: 5})
    worker._commit()
    assert worker.tracker.take_committable() == {TP0: 5}  # put back for the next round
    assert worker.metrics.value("upstream_kafka_errors_total", {"operation": "commit"}) == 1
    ready(worker, {TP0: 6})
    worker._commit(final=True)
    assert worker.tracker.take_committable() == {}
    assert worker.metrics.value("upstream_offset_commits_total") == 0


def test_commit_without_a_consumer_keeps_the_offsets(worker: Worker):
    ready(worker, {TP0: 2})
    worker._commit()
    assert worker.tracker.take_committable() == {TP0: 2}


def test_refresh_times_freshness_and_backfill_lag_in_seconds(worker: Worker):
    worker.history.append(
        [make_event("erin", "conversion", BASE_MS), make_event("hal", "conversion", BASE_MS)]
    )
    before_ms = int(time.time() * 1000)
    future = before_ms + 60_000  # a producer clock ahead of ours: clamped to 0, never negative
    # Far in the past, so a unit slip (1000 vs 1001 ms per second) moves the figure by seconds.
    event_ms, backfill_ms = before_ms - 10_000_000, before_ms - 20_000_000
    worker._backfill_handed.update({"erin": backfill_ms, "hal": future})
    worker._refresh(
        [
            request("erin", event_ms, future, backfill_ms, chunks=set()),
            request("hal", future, chunks=set()),
        ]
    )
    after_ms = int(time.time() * 1000)
    erin = worker.results[0]
    assert before_ms <= erin.written_at_ms <= after_ms
    assert erin.trigger_times_ms == [event_ms, future, backfill_ms]  # as requested
    value = worker.metrics.value
    # A backfill request's time is lag, not freshness: erin's event and future trigger are
    # freshness samples (the future one 0), her backfill time and hal's future one are lag.
    assert value("upstream_freshness_seconds_count") == 2
    fresh = value("upstream_freshness_seconds_sum")
    assert (before_ms - event_ms) / 1000 <= fresh <= (after_ms - event_ms) / 1000
    assert value("upstream_backfill_lag_seconds_count") == 2
    lag = value("upstream_backfill_lag_seconds_sum")
    assert (before_ms - backfill_ms) / 1000 <= lag <= (after_ms - backfill_ms) / 1000
    assert not worker._backfill_handed
    assert 0 < value("upstream_encode_seconds_sum") < 3600


def test_a_backfill_time_that_is_not_a_trigger_is_left_alone(worker: Worker):
    worker.history.append([make_event("fay", "conversion", BASE_MS)])
    worker._backfill_handed["fay"] = BASE_MS - 1  # handed, but this refresh came from an event
    worker._refresh([request("fay", BASE_MS, chunks=set())])
    assert worker.metrics.value("upstream_backfill_lag_seconds_count") == 0
    assert worker.metrics.value("upstream_freshness_seconds_count") == 1


def test_refresh_retries_a_failed_history_read_and_counter_update(worker: Worker, monkeypatch):
    worker.history.append([make_event("gus", "conversion", BASE_MS)])
    monkeypatch.setattr(worker._abort, "wait", lambda delay: False)
    for name in ("load", "consume_seen"):
        real, failed = getattr(worker.history, name), []

        def once(*args, real=real, failed=failed):
            if not failed:
                failed.append(True)
                raise redis.ConnectionError("down")
            return real(*args)

        monkeypatch.setattr(worker.history, name, once)
    worker._refresh([request("gus", BASE_MS, chunks=set())])
    assert redis_errors(worker, "history_load") == 1
    assert redis_errors(worker, "counter_update") == 1
    assert worker.embeddings.read("gus", worker.encoder.model_version) is not None


def test_retry_logs_the_operation_the_error_and_the_delay(worker: Worker, monkeypatch, caplog):
    monkeypatch.setattr(worker._abort, "wait", lambda delay: False)
    failures = iter([redis.TimeoutError("slow")])

    def op():
        if (e := next(failures, None)) is not None:
            raise e
        return 1

    with caplog.at_level("WARNING", logger="upstream_service.worker"):
        worker._retry(op, "history_load", worker.metrics.redis_errors)
    assert caplog.messages == ["history_load failed (slow); retrying in 0.1s"]


def test_commit_logs_a_failure_and_what_it_committed(worker: Worker, caplog):
    worker._consumer = RecordingConsumer(fail=True)
    ready(worker, {TP0: 5})
    with caplog.at_level("DEBUG", logger="upstream_service.worker"):
        worker._commit()
        worker._consumer = RecordingConsumer()
        worker._commit()
    assert caplog.messages == [
        "offset commit failed (KafkaError: coordinator moved); will retry",
        f"committed { ({TP0: 5}) }",
    ]
