"""The upstream worker: Kafka events -> history appends -> triggered batch encodes -> Redis.

Two threads:

* the consumer thread (``run``) polls Kafka, dead-letters invalid events, appends valid ones to
  the history store, submits refresh triggers to the batcher and commits offsets;
* the encoder thread takes batches from the batcher, reads the histories, runs the model,
  writes the embeddings and tells the offset tracker which polls are now fully durable.

The worker also consumes the refresh topic (``contract.RefreshRequest``, published by
``upstream_service.backfill``). Backfill requests wait in a worker-side queue and reach the batcher
only as spare capacity: while no event-triggered refresh is pending or encoding, at most
``backfill_max_per_batch`` at a time, so event freshness holds during a backfill. Their offsets,
like the events', are committed only after the embedding is written (so a long backfill queue
also holds back the commit of later event offsets: a crash redoes more, idempotently; the
backfill's ``--rate`` bounds the queue). A request for another model version (the other side of
a rollout) is skipped and counted.

The model never runs on the consumer thread, so ``poll`` keeps being called while a batch
encodes and the group never evicts the worker for blowing ``max_poll_interval_ms``. Offsets are
committed only once the appends and the embedding writes they cover returned from Redis.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from kafka import ConsumerRebalanceListener, KafkaConsumer
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition
from prometheus_client import Counter

from shared_model.contract import (
    ContractError,
    EmbeddingDType,
    EmbeddingRecord,
    UserEvent,
)
from shared_model.contract import (
    RefreshRequest as BackfillRequest,
)
from shared_model.process import freeze_long_lived_objects
from upstream_service.batcher import RefreshBatcher, RefreshRequest
from upstream_service.consumer import (
    DeadLetterPublisher,
    InvalidRecord,
    build_consumer,
    build_producer,
    decode_records,
)
from upstream_service.coverage import CoverageReporter
from upstream_service.embedding_store import EmbeddingStore
from upstream_service.encoder import UserEncoder
from upstream_service.history_store import HistoryStore
from upstream_service.http import HealthServer
from upstream_service.metrics import WorkerMetrics
from upstream_service.offsets import OffsetTracker
from upstream_service.redis_client import REDIS_ERRORS, connect_redis
from upstream_service.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

LAG_UPDATE_INTERVAL_S = 1.0

# Test hook, never set in production (tests/upstream_service/test_crash_recovery.py): with
# LLATTE_TEST_HOLD_BEFORE_WRITE=<dir>, once <dir>/arm exists the encoder thread stops for good
# between a batch's encode and its embedding write (after creating <dir>/held), so a test can
# SIGKILL the worker with that refresh deterministically in flight.
_HOLD_BEFORE_WRITE = os.environ.get("LLATTE_TEST_HOLD_BEFORE_WRITE")


def _test_hold_before_write() -> None:
    if _HOLD_BEFORE_WRITE and os.path.exists(os.path.join(_HOLD_BEFORE_WRITE, "arm")):
        with open(os.path.join(_HOLD_BEFORE_WRITE, "held"), "w"):
            pass
        threading.Event().wait()


class ShutdownAbortedError(RuntimeError):
    """The worker gave up retrying because the shutdown deadline passed."""


@dataclass(frozen=True)
class RefreshResult:
    """One finished refresh, as reported to ``Worker(on_refresh=...)`` (tests, benchmark)."""

    user_id: str
    record: EmbeddingRecord
    trigger_times_ms: list[int]  # event timestamps of the coalesced triggers
    written: bool  # False when Redis already held a newer embedding
    written_at_ms: int


class Worker:
    """Args:
    settings: the worker's settings.
    encoder: a ready encoder; loaded from ``settings.checkpoint_path`` when omitted.
    on_refresh: called on the encoder thread after each embedding write.
    """

    def __init__(
        self,
        settings: Settings,
        encoder: UserEncoder | None = None,
        on_refresh: Callable[[RefreshResult], None] | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = WorkerMetrics()
        self.on_refresh = on_refresh
        self._encoder = encoder
        self.redis = connect_redis(settings)
        caps = {"eng": settings.history_cap_engagement, "imp": settings.history_cap_impression}
        self.history = HistoryStore(
            self.redis, caps, settings.history_ttl_s, settings.refresh_every_n_events > 0
        )
        self.embeddings = EmbeddingStore(self.redis, settings.embedding_ttl_s)
        self.batcher = RefreshBatcher(settings.batch_max_size, settings.batch_max_wait_ms / 1000)
        self.tracker = OffsetTracker()
        self._triggers = settings.trigger_action_types
        self._stop = threading.Event()  # stop polling, drain, commit, close
        self._abort = threading.Event()  # the drain deadline passed: give up retrying
        self._joined = threading.Event()  # first partition assignment received
        # When the consumer lost its group coordinator (broker down); None while it has one.
        self._coordinator_lost_at: float | None = None
        self._fatal: BaseException | None = None
        self._encode_thread: threading.Thread | None = None
        self._coverage: CoverageReporter | None = None
        self._consumer: KafkaConsumer | None = None
        self._last_lag_update = 0.0
        # Backfill requests not yet handed to the batcher (consumer thread only), and the
        # publish time of those handed out, per user (shared with the encoder thread).
        self._backfill: deque[tuple[BackfillRequest, int]] = deque()
        self._backfill_handed: dict[str, int] = {}
        self._backfill_lock = threading.Lock()
        self._encoding = threading.Event()  # a batch is being encoded
        self.http: HealthServer | None = None
        if settings.metrics_port >= 0:
            self.http = HealthServer(
                settings.metrics_host,
                settings.metrics_port,
                self.metrics.registry,
                healthy=self.healthy,
                ready=self.ready,
            )

    # --- lifecycle ----------------------------------------------------------------------------
    def healthy(self) -> bool:
        if self._fatal is not None:
            return False
        return self._encode_thread is None or self._encode_thread.is_alive()

    def ready(self) -> bool:
        lost_at = self._coordinator_lost_at
        # A coordinator lookup during a normal rebalance is brief; a broker outage is not.
        kafka_ok = (
            lost_at is None
            or time.monotonic() - lost_at < self.settings.heartbeat_interval_ms / 1000
        )
        return self._joined.is_set() and kafka_ok and not self._stop.is_set() and self.healthy()

    def stop(self) -> None:
        """Ask the worker to shut down gracefully (safe from signal handlers and threads)."""
        self._stop.set()

    @property
    def encoder(self) -> UserEncoder:
        if self._encoder is None:
            s = self.settings
            self._encoder = UserEncoder.from_checkpoint(
                s.checkpoint_path,
                device=s.device,
                autocast=s.autocast,
                history_length=s.history_length,
                dtype=EmbeddingDType[s.embedding_dtype.upper()],
            )
        return self._encoder

    def run(self) -> None:
        """Consume until ``stop()``; then finish the in-flight work, commit and close."""
        s = self.settings
        if s.torch_threads:
            import torch

            torch.set_num_threads(s.torch_threads)
        if self.http is not None:
            self.http.start()
        producer = None
        try:
            self.encoder  # noqa: B018 - load the model before joining the group
            frozen = freeze_long_lived_objects()  # keep the cyclic GC off the model's objects
            log.info("%d startup objects frozen out of the cyclic GC", frozen)
            self.redis.ping()
            self._encode_thread = threading.Thread(
                target=self._encode_loop, name="upstream-encoder", daemon=True
            )
            self._encode_thread.start()
            if s.coverage_interval_s > 0:
                self._coverage = CoverageReporter(
                    self.redis, self.metrics, self.encoder.model_version, s.coverage_interval_s
                )
                self._coverage.start()
            producer = build_producer(s)
            dlq = DeadLetterPublisher(producer, s.dead_letter_topic)
            self._consumer = consumer = build_consumer(s)
            topics = [s.events_topic] + ([s.refresh_topic] if s.refresh_topic else [])
            consumer.subscribe(topics, listener=_Rebalance(self))
            log.info("consuming %s as group %s", ", ".join(topics), s.group_id)
            while not self._stop.is_set():
                records = consumer.poll(timeout_ms=s.poll_timeout_ms)
                if records:
                    try:
                        self._process(records, dlq)
                    except ShutdownAbortedError:
                        break  # stopped while Redis/Kafka were down: this poll is redone
                self._feed_backfill()
                self._commit()
                self._update_lag()
                self._check_coordinator(consumer)
            if self._fatal is None:
                log.info("stopping: finishing in-flight refreshes")
                if not self._drain(s.shutdown_timeout_s):
                    log.warning(
                        "refreshes unfinished after %.0fs stay uncommitted (they will be redone)",
                        s.shutdown_timeout_s,
                    )
                self._commit(final=True)
        finally:
            self._abort.set()
            if self._coverage is not None:
                self._coverage.stop()
            self.batcher.close()
            if self._encode_thread is not None:
                self._encode_thread.join(timeout=10)
            if self._consumer is not None:
                self._consumer.close(autocommit=False)
            if producer is not None:
                producer.close(timeout=5)
            if self.http is not None:
                self.http.stop()
            self.redis.close()
            log.info("stopped")
        if self._fatal is not None:
            raise RuntimeError("encoder thread failed") from self._fatal

    # --- consumer thread ----------------------------------------------------------------------
    def _process(self, records: dict[TopicPartition, list], dlq: DeadLetterPublisher) -> None:
        refresh_topic = self.settings.refresh_topic
        raw = [r for tp, batch in records.items() if tp.topic != refresh_topic for r in batch]
        requested = [r for tp, b in records.items() if tp.topic == refresh_topic for r in b]
        events, invalid = decode_records(raw)
        backfill, bad_requests = self._decode_backfill(requested)
        invalid += bad_requests
        for bad in invalid:
            dlq.publish(bad)
            self.metrics.events_invalid.inc()
        if invalid:
            self._retry(dlq.flush, "dlq_publish", self.metrics.kafka_errors, self._stop)
        is_new, seen = self._retry(
            lambda: self.history.append(events),
            "history_append",
            self.metrics.redis_errors,
            self._stop,
        )
        chunk = self.tracker.open({tp: batch[-1].offset + 1 for tp, batch in records.items()})
        for event, new in zip(events, is_new, strict=True):
            self.metrics.events_consumed.labels(event.action_type.name.lower()).inc()
            if not new:
                self.metrics.events_duplicate.inc()
            # A replay triggers too: its first delivery may have crashed before the write.
            if event.action_type in self._triggers:
                self._submit(event, chunk, "action")
        n = self.settings.refresh_every_n_events
        latest = {e.user_id: e for e in events}
        for user_id, count in seen.items():
            if n and count >= n:
                self._submit(latest[user_id], chunk, "count")
        if self.settings.refresh_max_age_s:
            self._submit_aged(latest, chunk)
        for request in backfill:
            self.tracker.add_dependency(chunk)
            self._backfill.append((request, chunk))
        self.metrics.backfill_waiting.set(len(self._backfill))
        self.tracker.seal(chunk)
        self.metrics.pending_refreshes.set(len(self.batcher))

    def _decode_backfill(self, records: list) -> tuple[list[BackfillRequest], list[InvalidRecord]]:
        ours = self.encoder.model_version
        accepted: list[BackfillRequest] = []
        invalid: list[InvalidRecord] = []
        for record in records:
            try:
                request = BackfillRequest.decode(record.value or b"")
            except ContractError as e:
                invalid.append(InvalidRecord(record, str(e)))
                self.metrics.backfill_requests.labels("invalid").inc()
                continue
            if request.model_version != ours:
                # The other side of a rollout: its own workers encode it.
                self.metrics.backfill_requests.labels("other_version").inc()
                continue
            self.metrics.backfill_requests.labels("accepted").inc()
            accepted.append(request)
        return accepted, invalid

    def _submit_aged(self, latest: dict[str, UserEvent], chunk: int) -> None:
        """Refresh active users whose embedding got older than ``refresh_max_age_s``."""
        users = list(latest)
        computed = self._retry(
            lambda: self.embeddings.computed_at(users, self.encoder.model_version),
            "age_read",
            self.metrics.redis_errors,
            self._stop,
        )
        oldest_ok = time.time() * 1000 - self.settings.refresh_max_age_s * 1000
        for user_id, computed_at in zip(users, computed, strict=True):
            if computed_at is not None and computed_at < oldest_ok:
                self._submit(latest[user_id], chunk, "age")

    def _feed_backfill(self, everything: bool = False) -> None:
        """Hand waiting backfill requests to the batcher when it has spare capacity."""
        if not self._backfill:
            return
        if not everything and (len(self.batcher) or self._encoding.is_set()):
            return  # event-triggered work first
        n = len(self._backfill) if everything else self.settings.backfill_max_per_batch
        for _ in range(min(n, len(self._backfill))):
            request, chunk = self._backfill.popleft()
            with self._backfill_lock:
                self._backfill_handed.setdefault(request.user_id, request.requested_at_ms)
            self.metrics.triggers.labels("backfill").inc()
            _, attached = self.batcher.submit(request.user_id, request.requested_at_ms, chunk)
            if not attached:
                self.tracker.resolve([chunk])
        self.metrics.backfill_waiting.set(len(self._backfill))

    def _submit(self, event: UserEvent, chunk: int, reason: str) -> None:
        self.metrics.triggers.labels(reason).inc()
        # Count the dependency first, so the encoder can never resolve it before it exists.
        self.tracker.add_dependency(chunk)
        coalesced, attached = self.batcher.submit(event.user_id, event.timestamp_ms, chunk)
        if coalesced:
            self.metrics.triggers_coalesced.inc()
        if not attached:
            self.tracker.resolve([chunk])

    def _commit(self, final: bool = False, only: set[TopicPartition] | None = None) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        offsets = self.tracker.take_committable()
        if only is not None:
            keep = {tp: o for tp, o in offsets.items() if tp in only}
            self.tracker.restore({tp: o for tp, o in offsets.items() if tp not in only})
            offsets = keep
        if not offsets:
            return
        try:
            consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()})
        except KafkaError as e:
            self.metrics.kafka_errors.labels("commit").inc()
            log.warning("offset commit failed (%s); will retry", e)
            if not final:
                self.tracker.restore(offsets)
            return
        self.metrics.offsets_committed.inc()
        log.debug("committed %s", offsets)

    def _drain(self, timeout: float) -> bool:
        """Hand out every pending refresh now and wait until all tracked polls are durable."""
        self._feed_backfill(everything=True)
        self.batcher.set_flushing(True)
        try:
            return self.tracker.wait_idle(timeout)
        finally:
            self.batcher.set_flushing(False)

    def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        # Finish and commit the work of the partitions we give up, so the new owner does not
        # redo it; what cannot finish in time stays uncommitted and is simply redone.
        if revoked and self._consumer is not None:
            if not self._drain(self.settings.max_poll_interval_ms / 2000):
                log.warning("revoked partitions with unfinished refreshes; they will be redone")
            self._commit(only=revoked)
        self.tracker.forget(revoked)
        for tp in revoked:
            with contextlib.suppress(KeyError):
                self.metrics.consumer_lag.remove(tp.topic, str(tp.partition))

    def _check_coordinator(self, consumer: KafkaConsumer) -> None:
        # kafka-python (pinned) has no public "connected" flag; the group coordinator lookup is
        # the consumer's own view of whether it can reach the group. Consumer thread only.
        unknown = consumer._coordinator.coordinator_unknown()
        if not unknown:
            if self._coordinator_lost_at is not None:
                log.info("group coordinator found again")
            self._coordinator_lost_at = None
        elif self._coordinator_lost_at is None:
            log.warning("group coordinator lost (broker unreachable?); reconnecting")
            self._coordinator_lost_at = time.monotonic()

    def _update_lag(self) -> None:
        now = time.monotonic()
        if self._consumer is None or now - self._last_lag_update < LAG_UPDATE_INTERVAL_S:
            return
        self._last_lag_update = now
        for tp in self._consumer.assignment():
            highwater = self._consumer.highwater(tp)
            if highwater is None:
                continue
            try:
                lag = highwater - self._consumer.position(tp, timeout_ms=100)
            except KafkaError:
                continue
            self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(0, lag))

    # --- encoder thread -----------------------------------------------------------------------
    def _encode_loop(self) -> None:
        try:
            while True:
                batch = self.batcher.next_batch(timeout=0.5)
                if batch:
                    self._encoding.set()
                    try:
                        self._refresh(batch)
                    finally:
                        self._encoding.clear()
                elif self._abort.is_set():
                    return
        except ShutdownAbortedError:
            log.warning("encoder stopped with a batch unfinished (it will be redone)")
        except BaseException as e:
            log.exception("encoder thread failed")
            self._fatal = e
            self._stop.set()

    def _refresh(self, batch: list[RefreshRequest]) -> None:
        m = self.metrics
        enc = self.encoder
        user_ids = [r.user_id for r in batch]
        histories = self._retry(
            lambda: self.history.load(user_ids, enc.history_length),
            "history_load",
            m.redis_errors,
        )
        todo = [(r, h) for r, h in zip(batch, histories, strict=True) if h.records]
        results: list[RefreshResult] = []
        if todo:
            m.batch_size.observe(len(todo))
            began = time.perf_counter()
            encoded = enc.encode([r.user_id for r, _ in todo], [h.records for _, h in todo])
            m.encode_seconds.observe(time.perf_counter() - began)
            items = [(e.user_id, e.record) for e in encoded]
            _test_hold_before_write()
            written = self._retry(
                lambda: self.embeddings.write(items), "embedding_write", m.redis_errors
            )
            self._retry(
                lambda: self.history.consume_seen(
                    {h.user_id: h.events_since_embedding for _, h in todo}
                ),
                "counter_update",
                m.redis_errors,
            )
            now_ms = int(time.time() * 1000)
            for (request, _), item, ok in zip(todo, encoded, written, strict=True):
                triggers = list(request.trigger_times_ms)
                with self._backfill_lock:
                    requested_ms = self._backfill_handed.pop(request.user_id, None)
                if requested_ms is not None and requested_ms in triggers:
                    triggers.remove(requested_ms)  # backfill lag, not event freshness
                    m.backfill_lag_seconds.observe(max(0.0, (now_ms - requested_ms) / 1000))
                if ok:
                    m.embeddings_written.inc()
                    for trigger_ms in triggers:
                        m.freshness_seconds.observe(max(0.0, (now_ms - trigger_ms) / 1000))
                else:
                    m.embeddings_stale.inc()
                results.append(
                    RefreshResult(
                        request.user_id, item.record, request.trigger_times_ms, ok, now_ms
                    )
                )
        for request in batch:
            self.tracker.resolve(request.chunks)
        m.pending_refreshes.set(len(self.batcher))
        if self.on_refresh is not None:
            for result in results:
                self.on_refresh(result)

    # --- shared -------------------------------------------------------------------------------
    def _retry(
        self,
        fn: Callable[[], T],
        operation: str,
        errors: Counter,
        give_up: threading.Event | None = None,
    ) -> T:
        """Retry a Redis/Kafka operation with backoff until it succeeds or ``give_up`` is set.

        The encoder thread gives up only when the shutdown deadline passed (``_abort``); the
        consumer thread as soon as a stop is requested (nothing of that poll is committed).

        Every retried operation is idempotent (ZADD of identical members, write-if-not-older,
        dead-letter duplicates), so a retry after an ambiguous failure is harmless.
        """
        give_up = give_up or self._abort
        delay = 0.1
        while True:
            try:
                return fn()
            except (*REDIS_ERRORS, KafkaError, OSError) as e:
                errors.labels(operation).inc()
                if give_up.is_set():
                    raise ShutdownAbortedError(operation) from e
                log.warning("%s failed (%s); retrying in %.1fs", operation, e, delay)
                give_up.wait(delay)
                delay = min(delay * 2, 5.0)


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        log.info("partitions revoked: %s", sorted(revoked))
        self.worker._on_revoked(set(revoked))

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("partitions assigned: %s", sorted(assigned))
        self.worker._joined.set()
