"""Faults around the upstream worker, which runs as a real ``python -m upstream_service`` process.

* repeated SIGKILL at seeded random points of a stream: no conversion is left unencoded, and at
  every kill the committed offsets cover only work that is already in Redis;
* two workers in one group, one SIGKILLed: the survivor takes over its partitions;
* Redis stopped and restarted: the worker backs off, commits nothing unwritten, catches up;
* the Kafka broker stopped and restarted: the worker reports not-ready, then resumes;
* corrupt embedding and history records: the next refresh overwrites or skips them.
"""

from __future__ import annotations

import itertools
import random
import re
import signal
import uuid
from pathlib import Path

import pytest
import redis

from loadtests.stack.servers import KafkaBroker, RedisServer
from shared_model.contract import (
    EMBEDDING_FIELD_NEWEST,
    EMBEDDING_FIELD_RECORD,
    SOURCE_ENGAGEMENT,
    EmbeddingDType,
    EmbeddingRecord,
    HistoryRecord,
    UserEvent,
    history_key,
    source_of,
    versioned_embedding_key,
)
from tests.reliability.conftest import (
    UpstreamProcess,
    committed_offsets,
    metric,
    metric_labels,
    newest_seen,
    send_events,
    upstream_env,
    wait_for,
)

BASE_MS = 1_750_000_000_000


def event(user: str, action: str, ts: int) -> UserEvent:
    return UserEvent(f"ev-{uuid.uuid4().hex[:12]}", user, ts, action, f"item-{ts % 7}")


def user_stream(users: int, rng: random.Random, prefix: str = "u") -> list[UserEvent]:
    """Per user a few views and clicks, then a conversion, in user-interleaved order."""
    per_user = []
    for i in range(users):
        user, ts = f"{prefix}-{i:03d}", BASE_MS + 1000 * i
        actions = [rng.choice(["view", "click", "impression"]) for _ in range(rng.randint(1, 3))]
        per_user.append([event(user, a, ts + j) for j, a in enumerate([*actions, "conversion"])])
    stream = []
    while any(per_user):
        stream.append(rng.choice([q for q in per_user if q]).pop(0))
    return stream


def last_conversions(events: list[UserEvent]) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in events:
        if e.action_type.name == "CONVERSION":
            out[e.user_id] = max(out.get(e.user_id, -1), e.timestamp_ms)
    return out


def all_seen(client: redis.Redis, conversions: dict[str, int]) -> bool:
    return all(newest_seen(client, u) >= t for u, t in conversions.items())


def durable_history(client: redis.Redis, e: UserEvent) -> bool:
    member = e.to_history_record().encode()
    return client.zscore(history_key(e.user_id, source_of(e.action_type)), member) is not None


def durable(client: redis.Redis, e: UserEvent) -> bool:
    """The event's effects are in Redis: its history member, and for a conversion an
    embedding that saw it."""
    if not durable_history(client, e):
        return False
    return e.action_type.name != "CONVERSION" or newest_seen(client, e.user_id) >= e.timestamp_ms


# ------------------------------------------------------------------------------------------
# 1. Repeated SIGKILL at random points
# ------------------------------------------------------------------------------------------


def hold_env(env: dict[str, str], hold_dir: Path) -> dict[str, str]:
    """The worker's test hook: once ``hold_dir/arm`` exists, the encoder stops for good between
    a batch's encode and its embedding write (and creates ``hold_dir/held``)."""
    return {**env, "LLATTE_TEST_HOLD_BEFORE_WRITE": str(hold_dir)}


def settle_commits(producer, topic: str, client: redis.Redis, prefix: str) -> list:
    """Return once the consumer thread finished a poll-process-commit round *after* the one
    that found the current state: two non-trigger events sent one after the other; when the
    second one's history append is visible, the commit that followed the first poll is done."""
    sent = []
    for i in range(2):
        e = event(f"{prefix}-{i}", "view", BASE_MS + 900_000 + i)
        send_events(producer, topic, [e])
        wait_for(lambda e=e: durable_history(client, e), 30, f"sentinel {e.user_id} appended")
        sent.append(e)
    return sent


def check_committed_are_durable(
    bootstrap: str, group: str, topic: str, partitions: int, placed: dict, client: redis.Redis
) -> tuple[int, int]:
    """With no worker running Redis is frozen: every committed event must have its effects
    there. Returns (committed events checked, events not yet durable)."""
    committed = committed_offsets(bootstrap, group, topic, partitions)
    checked, outstanding = 0, 0
    for (p, offset), e in placed.items():
        if offset < committed[p]:
            checked += 1
            assert durable(client, e), f"offset {p}@{offset} committed before {e} was durable"
        elif not durable(client, e):
            outstanding += 1
    return checked, outstanding


@pytest.mark.slow
def test_sigkill_between_encode_and_write_loses_no_acknowledged_event(
    kafka_broker, redis_server, redis_client, checkpoints, new_topic, producer_for, tmp_path
) -> None:
    partitions = 2
    topic = new_topic(kafka_broker, partitions=partitions)
    env = upstream_env(
        bootstrap=kafka_broker.bootstrap,
        redis_url=redis_server.url,
        topic=topic,
        checkpoint=checkpoints.upstream,
        batch_max_size="4",
    )
    group = env["UPSTREAM_GROUP_ID"]
    producer = producer_for(kafka_broker.bootstrap)
    rng = random.Random(17)
    before, during = user_stream(20, rng, prefix="a"), user_stream(20, rng, prefix="b")
    placed: dict[tuple[int, int], UserEvent] = {}

    worker = UpstreamProcess(hold_env(env, tmp_path), name="upstream-hold")
    with worker:
        worker.wait_worker_ready()
        placed.update(zip(send_events(producer, topic, before), before, strict=True))
        wait_for(lambda: all_seen(redis_client, last_conversions(before)), 60, "first users")
        # One conversion alone in its poll, so its refresh is all its offsets wait for.
        (tmp_path / "arm").touch()
        held = [event("held", "conversion", BASE_MS + 500_000)]
        placed.update(zip(send_events(producer, topic, held), held, strict=True))
        wait_for(lambda: (tmp_path / "held").exists(), 60, "a batch held before its write")
        # More work piles up behind the held batch: appended, refreshes pending.
        placed.update(zip(send_events(producer, topic, during), during, strict=True))
        wait_for(lambda: all(durable_history(redis_client, e) for e in during), 60, "appends")
        sentinels = settle_commits(producer, topic, redis_client, "sentinel")
        worker.kill(signal.SIGKILL)
        worker.wait(timeout=10)
    assert worker.returncode == -signal.SIGKILL
    checked, outstanding = check_committed_are_durable(
        kafka_broker.bootstrap, group, topic, partitions, placed, redis_client
    )
    assert checked >= len(before)  # the first users' events were acknowledged by a commit
    assert outstanding > 0  # the held batch's conversions were encoded but never written
    assert newest_seen(redis_client, "held") == -1  # encoded, never written

    restarted = UpstreamProcess(env, name="upstream-after-hold")
    with restarted:
        restarted.wait_worker_ready()
        wait_for(
            lambda: all_seen(redis_client, last_conversions(before + held + during)),
            90,
            "every user's embedding to see their newest conversion after the restart",
        )
        assert restarted.stop(timeout=30) == 0, restarted.log_tail()
    assert all(durable(redis_client, e) for e in [*before, *held, *during, *sentinels])


@pytest.mark.slow
def test_repeated_sigkill_loses_nothing_and_offsets_never_run_ahead(
    kafka_broker, redis_server, redis_client, checkpoints, new_topic, producer_for, tmp_path
) -> None:
    rng = random.Random(20240611)
    partitions = 2
    topic = new_topic(kafka_broker, partitions=partitions)
    env = upstream_env(
        bootstrap=kafka_broker.bootstrap,
        redis_url=redis_server.url,
        topic=topic,
        checkpoint=checkpoints.upstream,
        max_poll_records="20",
        batch_max_size="4",
    )
    group = env["UPSTREAM_GROUP_ID"]
    stream = user_stream(150, rng)
    chunks = [stream[i : i + 60] for i in range(0, len(stream), 60)]
    producer = producer_for(kafka_broker.bootstrap)
    placed: dict[tuple[int, int], UserEvent] = {}  # (partition, offset) -> event
    kills, checked = 0, 0

    for round_ in range(3):
        hold = tmp_path / f"round-{round_}"
        hold.mkdir()
        worker = UpstreamProcess(hold_env(env, hold), name=f"upstream-kill-{round_}")
        with worker:
            worker.wait_worker_ready()
            # Publish while the worker runs; after a random number of its writes, freeze the
            # encoder between an encode and its write, let the consumer commit what it may,
            # and kill it: every kill happens with a refresh in flight.
            sent = chunks.pop(0) if chunks else []
            placed.update(zip(send_events(producer, topic, sent), sent, strict=True))
            # (A chunk cut from the interleaved stream holds few complete users.)
            target = rng.randint(0, len(last_conversions(sent)))
            worker.wait_until(
                lambda w=worker, t=target: (
                    metric(w.metrics(), "upstream_embeddings_written_total") >= t
                ),
                timeout=60,
                what=f"{target} embedding writes",
            )
            (hold / "arm").touch()
            # One conversion alone in its poll: its offsets wait for nothing but its refresh.
            late = [event(f"late-{round_}", "conversion", BASE_MS + 800_000 + round_)]
            placed.update(zip(send_events(producer, topic, late), late, strict=True))
            stream += late
            wait_for(lambda h=hold: (h / "held").exists(), 60, "a batch held before its write")
            settle_commits(producer, topic, redis_client, f"sentinel{round_}")
            worker.kill(signal.SIGKILL)
            worker.wait(timeout=10)
        assert worker.returncode == -signal.SIGKILL
        kills += 1
        n, outstanding = check_committed_are_durable(
            kafka_broker.bootstrap, group, topic, partitions, placed, redis_client
        )
        checked += n
        assert outstanding > 0, "the kill found no work in flight"

    rest = [e for chunk in chunks for e in chunk]
    placed.update(zip(send_events(producer, topic, rest), rest, strict=True))
    final = UpstreamProcess(env, name="upstream-kill-final")
    with final:
        final.wait_worker_ready()
        conversions = last_conversions(stream)
        wait_for(
            lambda: all_seen(redis_client, conversions),
            90,
            "every user's embedding to see their newest conversion",
        )
        assert final.stop(timeout=30) == 0, final.log_tail()
    committed = committed_offsets(kafka_broker.bootstrap, group, topic, partitions)
    ends = {p: 1 + max(o for (q, o) in placed if q == p) for p in range(partitions)}
    # A graceful stop commits everything (the sentinels come after the placed events).
    assert all(committed[p] >= ends[p] for p in range(partitions)), (committed, ends)
    assert all(durable(redis_client, e) for e in stream)
    assert checked > 0
    print(
        f"\nsigkill: {kills} kills, {len(stream)} events, {len(conversions)} users, "
        f"{checked} committed offsets checked against Redis at kill time"
    )


# ------------------------------------------------------------------------------------------
# 2. Two workers, one killed
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_survivor_takes_over_partitions_of_killed_worker(
    kafka_broker, redis_server, redis_client, checkpoints, new_topic, producer_for
) -> None:
    partitions = 4
    topic = new_topic(kafka_broker, partitions=partitions)
    env = upstream_env(
        bootstrap=kafka_broker.bootstrap,
        redis_url=redis_server.url,
        topic=topic,
        checkpoint=checkpoints.upstream,
    )
    producer = producer_for(kafka_broker.bootstrap)
    rng = random.Random(7)
    survivor = UpstreamProcess(env, name="upstream-survivor")
    victim = UpstreamProcess(env, name="upstream-victim")
    with survivor, victim:
        survivor.wait_worker_ready()
        victim.wait_worker_ready()

        def owned(w: UpstreamProcess) -> set[str]:
            return metric_labels(w.metrics(), "upstream_consumer_lag", "partition")

        # Both own partitions once the group settled (the lag gauge lists what a worker owns).
        before = user_stream(40, rng, prefix="before")
        send_events(producer, topic, before)
        wait_for(
            lambda: (
                all_seen(redis_client, last_conversions(before))
                and owned(survivor)
                and owned(victim)
                and len(owned(survivor) | owned(victim)) == partitions
            ),
            60,
            "both workers to own partitions and encode the first users",
        )
        assert owned(survivor).isdisjoint(owned(victim))
        victim_consumed = metric(victim.metrics(), "upstream_events_consumed_total")
        assert victim_consumed > 0

        victim.kill(signal.SIGKILL)
        victim.wait(timeout=10)
        after = user_stream(40, rng, prefix="after")
        send_events(producer, topic, after)
        wait_for(
            lambda: all_seen(redis_client, last_conversions(after)),
            60,
            "the survivor to encode every user, the victim's partitions included",
        )
        # The lag gauge is refreshed once a second, once the fetch positions are known.
        wait_for(lambda: len(owned(survivor)) == partitions, 30, "the survivor to own all")
        assert survivor.is_ready()


# ------------------------------------------------------------------------------------------
# 3. Redis down and up
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_redis_outage_worker_backs_off_commits_nothing_unwritten_and_catches_up(
    kafka_broker, checkpoints, new_topic, producer_for
) -> None:
    partitions = 1
    topic = new_topic(kafka_broker, partitions=partitions)
    producer = producer_for(kafka_broker.bootstrap)
    with RedisServer() as private_redis:  # stopped mid-test: not the session server
        client = private_redis.client()
        env = upstream_env(
            bootstrap=kafka_broker.bootstrap,
            redis_url=private_redis.url,
            topic=topic,
            checkpoint=checkpoints.upstream,
            redis_socket_timeout_s="1",
        )
        group = env["UPSTREAM_GROUP_ID"]
        worker = UpstreamProcess(env, name="upstream-redis-outage")
        with worker:
            worker.wait_worker_ready()
            first = [event("r-0", "conversion", BASE_MS)]
            send_events(producer, topic, first)
            wait_for(lambda: newest_seen(client, "r-0") == BASE_MS, 30, "the first embedding")
            wait_for(
                lambda: committed_offsets(kafka_broker.bootstrap, group, topic, 1)[0] == 1,
                30,
                "the first offset to be committed",
            )

            private_redis.stop()
            during = [event(f"r-{i}", "conversion", BASE_MS + i) for i in range(1, 6)]
            send_events(producer, topic, during)
            # Backing off: the retry delay doubles (0.1, 0.2, 0.4 s ...) while Redis is down.
            wait_for(
                lambda: "retrying in 0.8s" in worker.log_text(),
                30,
                "the worker to back off to 0.8 s between Redis retries",
            )
            delays = [float(d) for d in re.findall(r"retrying in ([\d.]+)s", worker.log_text())]
            assert delays[:4] == [0.1, 0.2, 0.4, 0.8]
            assert worker.running
            # Polled but unwritten: the committed offset has not moved.
            assert committed_offsets(kafka_broker.bootstrap, group, topic, 1) == {0: 1}

            private_redis.start()  # same port, empty (no persistence)
            client = private_redis.client()
            wait_for(
                lambda: all(newest_seen(client, e.user_id) == e.timestamp_ms for e in during),
                60,
                "the conversions sent during the outage to be encoded",
            )
            wait_for(
                lambda: committed_offsets(kafka_broker.bootstrap, group, topic, 1)[0] == 6,
                30,
                "the offsets to catch up",
            )
            text = worker.metrics()
            assert metric(text, "upstream_redis_errors_total") >= 4
            assert worker.is_ready()
            assert worker.stop(timeout=30) == 0, worker.log_tail()


# ------------------------------------------------------------------------------------------
# 4. Kafka broker down and up
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_broker_restart_worker_goes_not_ready_then_resumes(
    redis_server, redis_client, checkpoints, producer_for
) -> None:
    # A private broker: Tansu keeps everything in memory, so a restart loses topics and offsets.
    # What is asserted is the worker's behaviour, not the broker's durability.
    with KafkaBroker() as broker:
        topic = f"events-{uuid.uuid4().hex[:10]}"
        broker.create_topic(topic, 1)
        broker.create_topic(f"{topic}-dlq", 1)
        env = upstream_env(
            bootstrap=broker.bootstrap,
            redis_url=redis_server.url,
            topic=topic,
            checkpoint=checkpoints.upstream,
        )
        producer = producer_for(broker.bootstrap)
        worker = UpstreamProcess(env, name="upstream-broker-restart")
        with worker:
            worker.wait_worker_ready()
            send_events(producer, topic, [event("k-before", "conversion", BASE_MS)])
            wait_for(lambda: newest_seen(redis_client, "k-before") == BASE_MS, 30, "k-before")

            log_mark = len(worker.log_text())
            broker.stop()
            wait_for(lambda: not worker.is_ready(), 30, "the worker to report not-ready")
            assert worker.running, worker.log_tail()
            assert "group coordinator lost" in worker.log_text()

            # Retrying with backoff, not spinning: per connection (client thread, broker node),
            # the gaps between its refused reconnect attempts grow.
            def attempts() -> dict[tuple[str, str], list[float]] | None:
                per_connection = reconnect_attempts(worker.log_text()[log_mark:])
                busy = {k: v for k, v in per_connection.items() if len(v) >= 5}
                return busy or None

            for connection, times in wait_for(
                attempts, 30, "five reconnects of one connection"
            ).items():
                gaps = [b - a for a, b in itertools.pairwise(times)]
                assert gaps[-1] >= 2 * gaps[0], (connection, gaps)
            broker.start()  # same port, empty
            broker.create_topic(topic, 1, exist_ok=True)
            broker.create_topic(f"{topic}-dlq", 1, exist_ok=True)
            wait_for(worker.is_ready, 60, "the worker to be ready again")
            send_events(producer, topic, [event("k-after", "conversion", BASE_MS + 1)])
            wait_for(
                lambda: newest_seen(redis_client, "k-after") == BASE_MS + 1,
                60,
                "an event sent after the restart to be encoded",
            )
            assert worker.stop(timeout=30) == 0, worker.log_tail()


def reconnect_attempts(log_text: str) -> dict[tuple[str, str], list[float]]:
    """(thread, node) -> seconds (of the day) of kafka-python's refused connection attempts
    in a worker log: each attempt logs ``<KafkaConnection node_id=...>: Connection lost``."""
    attempts: dict[tuple[str, str], list[float]] = {}
    pattern = (
        r"^\S+ (\d\d):(\d\d):(\d\d),(\d{3}) \S+ kafka\.net\.connection \[([^\]]+)\] "
        r"<KafkaConnection node_id=(\S+) .*Connection lost: .*ECONNREFUSED"
    )
    for m in re.finditer(pattern, log_text, re.M):
        h, mi, sec, ms = (int(g) for g in m.groups()[:4])
        attempts.setdefault((m[5], m[6]), []).append(3600 * h + 60 * mi + sec + ms / 1000)
    return attempts


# ------------------------------------------------------------------------------------------
# 5. Corrupt records in Redis
# ------------------------------------------------------------------------------------------


def corrupt_embeddings(dim: int) -> dict[str, tuple[bytes, bytes]]:
    """user -> (record bytes, newest_event_ms field) for each kind of corruption."""
    good = EmbeddingRecord((0.5,) * dim, "old-model", BASE_MS - 10, BASE_MS - 10, 3).encode()
    wrong_version = bytearray(good)
    wrong_version[4] = 99  # contract version byte
    wrong_dtype = bytearray(good)
    wrong_dtype[5] = 7  # dtype code
    as_f32 = EmbeddingRecord(
        (0.5,) * dim, "old-model", BASE_MS - 10, BASE_MS - 10, 3, EmbeddingDType.FLOAT32
    ).encode()
    f32_labelled_f16 = bytearray(as_f32)
    f32_labelled_f16[5] = int(EmbeddingDType.FLOAT16)  # dtype says 2 bytes, payload has 4
    old = str(BASE_MS - 10).encode()
    return {
        "c-truncated": (good[:-3], old),
        "c-wrong-version": (bytes(wrong_version), old),
        "c-wrong-dtype": (bytes(wrong_dtype), old),
        "c-dtype-mismatch": (bytes(f32_labelled_f16), old),
        "c-garbage": (b"\x00garbage", old),
        "c-bad-newest-field": (good, b"not-a-number"),
    }


def test_corrupt_records_are_overwritten_or_skipped_by_the_next_refresh(
    kafka_broker, redis_server, redis_client, checkpoints, new_topic, producer_for
) -> None:
    from shared_model.config import tiny_config

    topic = new_topic(kafka_broker, partitions=1)
    dim = tiny_config("upstream").d_upstream
    corrupt = corrupt_embeddings(dim)
    for user, (record, newest) in corrupt.items():
        redis_client.hset(
            versioned_embedding_key(user, checkpoints.upstream_version),
            mapping={EMBEDDING_FIELD_RECORD: record, EMBEDDING_FIELD_NEWEST: newest},
        )
        # And an undecodable member in the user's history (unknown contract version).
        bad = bytearray(event(user, "click", BASE_MS - 5).to_history_record().encode())
        bad[0] = 99
        redis_client.zadd(history_key(user, SOURCE_ENGAGEMENT), {bytes(bad): BASE_MS - 5})
    env = upstream_env(
        bootstrap=kafka_broker.bootstrap,
        redis_url=redis_server.url,
        topic=topic,
        checkpoint=checkpoints.upstream,
    )
    worker = UpstreamProcess(env, name="upstream-corrupt")
    producer = producer_for(kafka_broker.bootstrap)
    with worker:
        worker.wait_worker_ready()
        events = [event(user, "conversion", BASE_MS + i) for i, user in enumerate(corrupt)]
        send_events(producer, topic, events)
        for e in events:
            worker.wait_until(
                lambda e=e: newest_seen(redis_client, e.user_id) == e.timestamp_ms,
                timeout=30,
                what=f"{e.user_id}'s corrupt embedding to be overwritten",
            )
            key = versioned_embedding_key(e.user_id, checkpoints.upstream_version)
            record = EmbeddingRecord.decode(redis_client.hget(key, "record"))
            assert record.model_version == checkpoints.upstream_version
            assert record.history_length == 1  # the corrupt history member was skipped
            members = redis_client.zrange(history_key(e.user_id, SOURCE_ENGAGEMENT), 0, -1)
            decodable = []
            for m in members:
                try:
                    decodable.append(HistoryRecord.decode(m))
                except ValueError:
                    continue
            assert len(decodable) == 1
        assert metric(worker.metrics(), "upstream_embeddings_written_total") == len(corrupt)
        assert worker.stop(timeout=30) == 0, worker.log_tail()
