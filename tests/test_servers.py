"""The real-server harness: redis-server, the Tansu broker and subprocess services."""

from __future__ import annotations

import logging
import re
import signal
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.partitioner.default import murmur2
from redis.backoff import NoBackoff
from redis.retry import Retry

from loadtests.stack.servers import (
    FAST_GROUP_CONSUMER,
    LOOPBACK,
    KafkaBroker,
    ManagedProcess,
    RedisServer,
    ServerExitedError,
    ServiceProcess,
    free_port,
    port_is_open,
)

log = logging.getLogger(__name__)


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _process_alive(pid: int) -> bool:
    """True unless pid is gone or a zombie (PID 1 in a container may never reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


# --- redis -------------------------------------------------------------------------------


def test_redis_round_trip(redis_server: RedisServer, redis_client: redis.Redis) -> None:
    assert redis_server.port != 6379
    assert redis_client.dbsize() == 0  # flushed, whatever the previous test wrote
    redis_client.set("emb:user-1", b"\x00\x01\xff", ex=60)
    redis_client.hset("meta:user-1", mapping={"version": "3", "dim": "64"})
    assert redis_client.get("emb:user-1") == b"\x00\x01\xff"
    assert redis_client.hgetall("meta:user-1") == {b"version": b"3", b"dim": b"64"}
    assert 0 < redis_client.ttl("emb:user-1") <= 60
    assert redis.Redis.from_url(redis_server.url).get("emb:user-1") == b"\x00\x01\xff"


def test_redis_client_is_flushed_between_tests(redis_client: redis.Redis) -> None:
    # Together with test_redis_round_trip: whichever runs second sees the other's keys gone.
    assert redis_client.dbsize() == 0
    redis_client.set("leftover", "x")


def test_redis_restart_keeps_port_and_password() -> None:
    with RedisServer(password="s3cret/pass") as server:
        port = server.port
        # No retries: redis-py 8 retries an AuthenticationError for ~3.6 s by default.
        anonymous = redis.Redis(host=LOOPBACK, port=port, retry=Retry(NoBackoff(), 0))
        with pytest.raises(redis.AuthenticationError):
            anonymous.ping()
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")

        server.stop()
        assert not port_is_open(port)
        with pytest.raises(redis.ConnectionError):
            client.ping()

        server.start()
        assert server.port == port
        assert client.ping()  # the same client reconnects
        assert client.get("k") is None  # no persistence: a restart comes back empty
        client.close()


# --- kafka -------------------------------------------------------------------------------


def test_kafka_round_trip_through_three_partitions(kafka_broker: KafkaBroker) -> None:
    topic = _unique("round-trip")
    kafka_broker.create_topic(topic, partitions=3)
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap)
    for i in range(30):
        producer.send(topic, value=f"m{i}".encode(), partition=i % 3)
    producer.flush(timeout=10)
    producer.close(timeout=5)

    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.bootstrap, consumer_timeout_ms=5000)
    partitions = [TopicPartition(topic, p) for p in range(3)]
    assert consumer.partitions_for_topic(topic) == {0, 1, 2}
    consumer.assign(partitions)
    consumer.seek_to_beginning()
    received: dict[int, list[bytes]] = defaultdict(list)
    deadline = time.monotonic() + 15
    while sum(map(len, received.values())) < 30 and time.monotonic() < deadline:
        for tp, records in consumer.poll(timeout_ms=200).items():
            received[tp.partition] += [r.value for r in records]
    consumer.close()

    for p in range(3):
        assert received[p] == [f"m{i}".encode() for i in range(p, 30, 3)]


def test_kafka_consumer_group_keeps_each_key_on_one_partition(kafka_broker: KafkaBroker) -> None:
    topic, group = _unique("keyed"), _unique("group")
    kafka_broker.create_topic(topic, partitions=3)
    keys = [f"user-{i}".encode() for i in range(12)]
    # Java-compatible murmur2 partitioning: the same key always lands on the same partition.
    expected = {key: (murmur2(key) & 0x7FFFFFFF) % 3 for key in keys}
    assert set(expected.values()) == {0, 1, 2}

    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap)
    sent: dict[bytes, set[int]] = defaultdict(set)
    for seq in range(5):
        for key in keys:
            metadata = producer.send(topic, key=key, value=str(seq).encode()).get(timeout=10)
            sent[key].add(metadata.partition)
    producer.close(timeout=5)
    assert {key: partitions.pop() for key, partitions in sent.items()} == expected

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_broker.bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **FAST_GROUP_CONSUMER,
    )
    records = []
    try:
        began = time.monotonic()
        deadline = began + 30
        while not consumer.assignment() and time.monotonic() < deadline:
            records += [r for batch in consumer.poll(timeout_ms=100).values() for r in batch]
        join_seconds = time.monotonic() - began
        log.info("consumer group join took %.2fs with %s", join_seconds, FAST_GROUP_CONSUMER)
        while len(records) < 60 and time.monotonic() < deadline:
            records += [r for batch in consumer.poll(timeout_ms=200).values() for r in batch]
        assignment = consumer.assignment()
        consumer.commit()
        committed = {tp.partition: consumer.committed(tp) for tp in assignment}
    finally:
        consumer.close()

    assert assignment == {TopicPartition(topic, p) for p in range(3)}
    assert len(records) == 60
    seen: dict[bytes, set[int]] = defaultdict(set)
    values: dict[bytes, list[int]] = defaultdict(list)
    for record in records:
        seen[record.key].add(record.partition)
        values[record.key].append(int(record.value))
    assert {key: partitions.pop() for key, partitions in seen.items()} == expected
    assert all(sequence == list(range(5)) for sequence in values.values())  # per-key order
    keys_per_partition = Counter(expected.values())
    assert committed == {partition: 5 * n for partition, n in keys_per_partition.items()}


def test_kafka_broker_restart_on_same_port() -> None:
    with KafkaBroker() as broker:
        port, bootstrap = broker.port, broker.bootstrap
        broker.create_topic("events", partitions=3)
        # Idempotent producers (the default) cannot re-initialise against a restarted Tansu.
        producer = KafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
        assert producer.send("events", key=b"k", value=b"before").get(timeout=10).offset == 0

        broker.stop()
        assert not broker.running
        assert not port_is_open(port)

        broker.start()
        assert (broker.port, broker.bootstrap) == (port, bootstrap)
        assert broker.list_topics() == []  # memory storage: topics die with the process
        broker.create_topic("events", partitions=3)
        after = producer.send("events", key=b"k", value=b"after").get(timeout=15)
        assert after.offset == 0  # the producer reconnected on its own
        producer.close(timeout=5)


# --- subprocesses ------------------------------------------------------------------------


def test_service_process_waits_for_readyz_and_takes_signals(tmp_path: Path) -> None:
    (tmp_path / "readyz").write_text("ok")
    port = free_port()
    service = ServiceProcess(
        "http.server",
        str(port),
        "--bind",
        LOOPBACK,
        "--directory",
        str(tmp_path),
        log_path=tmp_path / "http.log",
    )
    with service:
        service.wait_ready(f"http://{LOOPBACK}:{port}/readyz", timeout=15)
        service.kill(signal.SIGTERM)
        assert service.wait(timeout=10) == -signal.SIGTERM
    assert "GET /readyz" in service.log_text()
    assert not port_is_open(port)


def test_wait_ready_fails_fast_when_the_service_dies(tmp_path: Path) -> None:
    with ServiceProcess("tests.no_such_module", log_path=tmp_path / "dead.log") as service:
        began = time.monotonic()
        with pytest.raises(ServerExitedError, match="No module named"):
            service.wait_ready(f"http://{LOOPBACK}:{free_port()}/readyz", timeout=30)
        assert time.monotonic() - began < 15


def test_stop_kills_the_whole_process_group_even_if_it_ignores_sigterm(tmp_path: Path) -> None:
    script = 'trap "" TERM; sleep 300 & echo "child=$!"; wait'
    process = ManagedProcess(["bash", "-c", script], name="stubborn", log_path=tmp_path / "s.log")
    with process:
        process.wait_until(lambda: "\nchild=" in process.log_text(), timeout=10, what="child pid")
        child = int(re.search(r"^child=(\d+)$", process.log_text(), re.MULTILINE)[1])
        assert _process_alive(child)
        began = time.monotonic()
        process.stop(timeout=0.5)
        assert time.monotonic() - began < 5
    assert process.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 5
    while _process_alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _process_alive(child)
