"""Fixtures for the upstream worker tests: a tiny checkpoint, fresh topics, a worker in a thread."""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer

from loadtests.stack.checkpoints import random_checkpoint
from loadtests.stack.polling import wait_for
from loadtests.stack.servers import FAST_GROUP_CONSUMER, KafkaBroker, RedisServer
from shared_model.config import tiny_config
from shared_model.contract import ActionType, UserEvent
from upstream_service.settings import Settings
from upstream_service.worker import RefreshResult, Worker

BASE_MS = 1_750_000_000_000
_event_ids = itertools.count()


def make_event(
    user_id: str, action: str | ActionType, ts_ms: int, item_id: str = "item-1", **kw
) -> UserEvent:
    return UserEvent(
        event_id=f"ev-{next(_event_ids)}-{uuid.uuid4().hex[:8]}",
        user_id=user_id,
        timestamp_ms=ts_ms,
        action_type=action,
        item_id=item_id,
        **kw,
    )


@pytest.fixture(scope="session")
def upstream_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "upstream"
    random_checkpoint(path, tiny_config("upstream"), seed=0)
    return path


@pytest.fixture
def topic(kafka_broker: KafkaBroker) -> str:
    """A fresh 2-partition events topic (and its dead-letter topic) per test."""
    name = f"events-{uuid.uuid4().hex[:10]}"
    kafka_broker.create_topic(name, partitions=2)
    kafka_broker.create_topic(f"{name}-dlq", partitions=1)
    return name


@pytest.fixture
def settings(
    redis_server: RedisServer, kafka_broker: KafkaBroker, upstream_checkpoint: Path, topic: str
) -> Settings:
    return Settings(
        kafka_bootstrap_servers=kafka_broker.bootstrap,
        events_topic=topic,
        dead_letter_topic=f"{topic}-dlq",
        group_id=f"group-{topic}",
        redis_url=redis_server.url,
        checkpoint_path=upstream_checkpoint,
        batch_max_size=16,
        batch_max_wait_ms=100,
        metrics_host="127.0.0.1",
        metrics_port=0,
        shutdown_timeout_s=10,
        **FAST_GROUP_CONSUMER,
    )


class WorkerThread:
    """A real Worker running in a thread, recording every refresh it reports."""

    def __init__(self, settings: Settings) -> None:
        self.refreshes: list[RefreshResult] = []
        self._lock = threading.Lock()
        self.worker = Worker(settings, on_refresh=self._record)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="test-worker", daemon=True)

    def _record(self, result: RefreshResult) -> None:
        with self._lock:
            self.refreshes.append(result)

    def refreshes_of(self, user_id: str) -> list[RefreshResult]:
        with self._lock:
            return [r for r in self.refreshes if r.user_id == user_id]

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as e:
            self.error = e
            raise

    def start(self, timeout: float = 30.0) -> WorkerThread:
        self.thread.start()
        wait_for(lambda: self.worker.ready() or self.error, timeout, "the worker to join")
        assert self.error is None, self.error
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.worker.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "worker did not stop"


@pytest.fixture
def start_worker(settings: Settings) -> Iterator[Callable[..., WorkerThread]]:
    started: list[WorkerThread] = []

    def start(**overrides) -> WorkerThread:
        w = WorkerThread(settings.model_copy(update=overrides)).start()
        started.append(w)
        return w

    yield start
    for w in started:
        if w.thread.is_alive():
            w.stop()


@pytest.fixture
def producer(kafka_broker: KafkaBroker) -> Iterator[KafkaProducer]:
    p = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, enable_idempotence=False)
    yield p
    p.close(timeout=5)


@pytest.fixture
def send(producer: KafkaProducer, topic: str) -> Callable[..., None]:
    """Publish events (or raw bytes with a key) to the test topic and wait for the acks."""

    def send(*events: UserEvent | tuple[bytes | None, bytes]) -> None:
        futures = []
        for e in events:
            key, value = (e.kafka_key(), e.encode()) if isinstance(e, UserEvent) else e
            futures.append(producer.send(topic, key=key, value=value))
        producer.flush(timeout=10)
        for f in futures:
            f.get(timeout=10)

    return send


@pytest.fixture
def dlq_consumer(kafka_broker: KafkaBroker, topic: str) -> Iterator[KafkaConsumer]:
    c = KafkaConsumer(
        f"{topic}-dlq",
        bootstrap_servers=kafka_broker.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    yield c
    c.close()
