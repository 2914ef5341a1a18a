"""Reliability fixtures: tiny checkpoints that agree, and the services as real processes.

The upstream worker runs as ``python -m upstream_service`` and the ranker as
``python -m uvicorn ranker_service.main:app``, both configured only through their environment
variables, as in production. Everything is polled with a deadline; nothing sleeps and hopes.
"""

from __future__ import annotations

import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from loadtests.stack.polling import wait_for
from loadtests.stack.servers import FAST_GROUP_CONSUMER, LOOPBACK, ServiceProcess, free_port
from shared_model.contract import EmbeddingRecord, UserEvent, embedding_key

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    """(status, body) of a GET; status 0 when nothing answered."""
    try:
        with _OPENER.open(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return 0, ""


def metric(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels`` (0 when absent)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(
                sample.labels.get(k) == v for k, v in (labels or {}).items()
            ):
                total += sample.value
    return total


def metric_labels(text: str, name: str, label: str) -> set[str]:
    """The values of ``label`` over the samples called ``name``."""
    return {
        s.labels[label]
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and label in s.labels
    }


def newest_seen(client, user_id: str) -> int:
    """The newest event timestamp the user's stored embedding saw (-1: none or unreadable)."""
    keys = list(client.scan_iter(match=embedding_key(user_id) + ":*"))  # one model version
    raw = client.hget(keys[0], "record") if keys else None
    if raw is None:
        return -1
    try:
        return EmbeddingRecord.decode(raw).newest_event_ms
    except ValueError:
        return -1


# ------------------------------------------------------------------------------------------
# Checkpoints: the online one is trained against the upstream one, so the ranker uses what the
# worker writes.
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoints:
    upstream: Path
    upstream_version: str
    online: Path


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Checkpoints:
    from loadtests.stack.checkpoints import checkpoint_pair

    pair = checkpoint_pair(tmp_path_factory.mktemp("reliability-ckpt"))
    return Checkpoints(pair.upstream, pair.upstream_version, pair.online)


# ------------------------------------------------------------------------------------------
# Services as processes
# ------------------------------------------------------------------------------------------


class UpstreamProcess(ServiceProcess):
    """``python -m upstream_service`` with its health/metrics server on a free port."""

    def __init__(self, env: dict[str, str], name: str = "upstream") -> None:
        self.port = free_port()
        env = {**env, "UPSTREAM_METRICS_HOST": LOOPBACK, "UPSTREAM_METRICS_PORT": str(self.port)}
        super().__init__("upstream_service", env=env, name=name)

    @property
    def base(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def is_ready(self) -> bool:
        return http_get(f"{self.base}/readyz")[0] == 200

    def metrics(self) -> str:
        return http_get(f"{self.base}/metrics")[1]

    def wait_worker_ready(self, timeout: float = 60.0) -> None:
        # A dead member holds its partitions until its session times out: allow for that.
        self.wait_ready(f"{self.base}/readyz", timeout=timeout)


def upstream_env(
    *,
    bootstrap: str,
    redis_url: str,
    topic: str,
    checkpoint: Path,
    group: str | None = None,
    **extra: str,
) -> dict[str, str]:
    env = {
        "UPSTREAM_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "UPSTREAM_EVENTS_TOPIC": topic,
        "UPSTREAM_DEAD_LETTER_TOPIC": f"{topic}-dlq",
        "UPSTREAM_GROUP_ID": group or f"group-{topic}",
        "UPSTREAM_REDIS_URL": redis_url,
        "UPSTREAM_CHECKPOINT_PATH": str(checkpoint),
        "UPSTREAM_BATCH_MAX_SIZE": "8",
        "UPSTREAM_BATCH_MAX_WAIT_MS": "20",
        "UPSTREAM_MAX_POLL_RECORDS": "50",
        "UPSTREAM_TORCH_THREADS": "1",
        "UPSTREAM_SHUTDOWN_TIMEOUT_S": "10",
        **{f"UPSTREAM_{k.upper()}": str(v) for k, v in FAST_GROUP_CONSUMER.items()},
    }
    env.update({f"UPSTREAM_{k.upper()}": v for k, v in extra.items()})
    return env


class RankerProcess(ServiceProcess):
    """``uvicorn ranker_service.main:app`` on a free port, configured by ``RANKER_*``."""

    def __init__(self, env: dict[str, str], name: str = "ranker") -> None:
        self.port = free_port()
        super().__init__(
            "uvicorn",
            "ranker_service.main:app",
            "--host", LOOPBACK,
            "--port", str(self.port),
            "--no-access-log",
            env=env,
            name=name,
        )  # fmt: skip

    @property
    def base(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def metrics(self) -> str:
        return http_get(f"{self.base}/metrics")[1]

    def wait_alive(self, timeout: float = 60.0) -> None:
        self.wait_ready(f"{self.base}/healthz", timeout=timeout)


def ranker_env(redis_url: str, checkpoint: Path, **extra: str) -> dict[str, str]:
    env = {
        "RANKER_REDIS_URL": redis_url,
        "RANKER_CHECKPOINT_PATH": str(checkpoint),
        # Generous: a loaded 2-core box must not turn a hit into a timeout.
        "RANKER_REDIS_BUDGET_MS": "1000",
        "RANKER_WARMUP_CANDIDATES": "[1,3]",
        "RANKER_MAX_CANDIDATES": "50",
        "RANKER_MAX_INLINE_EVENTS": "20",
        "RANKER_MAX_BODY_BYTES": str(64 * 1024),
        "RANKER_EMBEDDING_MAX_AGE_S": str(10 * 365 * 86400),
    }
    env.update({f"RANKER_{k.upper()}": v for k, v in extra.items()})
    return env


# ------------------------------------------------------------------------------------------
# Kafka helpers
# ------------------------------------------------------------------------------------------


@pytest.fixture
def new_topic() -> Callable[..., str]:
    """Create a fresh events topic and its dead-letter topic on a broker."""

    def create(broker, partitions: int = 2) -> str:
        name = f"events-{uuid.uuid4().hex[:10]}"
        broker.create_topic(name, partitions=partitions)
        broker.create_topic(f"{name}-dlq", partitions=1)
        return name

    return create


@pytest.fixture
def producer_for() -> Iterator[Callable[[str], KafkaProducer]]:
    made: list[KafkaProducer] = []

    def make(bootstrap: str, **kw) -> KafkaProducer:
        # Not idempotent: such a producer survives a broker restart (stack/servers.py).
        p = KafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=5, **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close(timeout=5)


def send_events(
    producer: KafkaProducer, topic: str, events: Iterable[UserEvent | tuple[bytes | None, bytes]]
) -> list[tuple[int, int]]:
    """Publish and wait for the acks; returns (partition, offset) per event."""
    futures = []
    for e in events:
        key, value = (e.kafka_key(), e.encode()) if isinstance(e, UserEvent) else e
        futures.append(producer.send(topic, key=key, value=value))
    producer.flush(timeout=30)
    metas = [f.get(timeout=30) for f in futures]
    return [(m.partition, m.offset) for m in metas]


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offset per partition (-1 where none), read without joining."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        out = {}
        for p in range(partitions):
            committed = consumer.committed(TopicPartition(topic, p))
            out[p] = -1 if committed is None else committed
        return out
    finally:
        consumer.close(autocommit=False)


def read_dead_letters(bootstrap: str, topic: str, count: int, timeout: float = 30.0) -> list:
    """Read ``count`` records of the dead-letter topic from the start."""
    consumer = KafkaConsumer(
        f"{topic}-dlq",
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        fetch_max_bytes=16 * 1024 * 1024,
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )
    dead: list = []
    try:

        def collect() -> bool:
            for batch in consumer.poll(timeout_ms=200).values():
                dead.extend(batch)
            return len(dead) >= count

        wait_for(collect, timeout, f"{count} dead letters")
        return dead
    finally:
        consumer.close()
