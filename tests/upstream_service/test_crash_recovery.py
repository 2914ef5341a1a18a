"""SIGKILL the worker process mid-stream: after a restart no conversion is left unencoded."""

from __future__ import annotations

import signal

import pytest

from loadtests.stack.servers import FAST_GROUP_CONSUMER, ServiceProcess, free_port
from shared_model.contract import EmbeddingRecord, embedding_key
from tests.upstream_service.conftest import BASE_MS, make_event, wait_for


def newest_seen(client, user_id: str) -> int:
    keys = list(client.scan_iter(match=embedding_key(user_id) + ":*"))  # one model version
    raw = client.hget(keys[0], "record") if keys else None
    return -1 if raw is None else EmbeddingRecord.decode(raw).newest_event_ms


@pytest.mark.slow
def test_sigkill_mid_stream_loses_no_refresh(settings, send, redis_client):
    port = free_port()
    env = {
        "UPSTREAM_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "UPSTREAM_EVENTS_TOPIC": settings.events_topic,
        "UPSTREAM_DEAD_LETTER_TOPIC": settings.dead_letter_topic,
        "UPSTREAM_GROUP_ID": settings.group_id,
        "UPSTREAM_REDIS_URL": settings.redis_url,
        "UPSTREAM_CHECKPOINT_PATH": str(settings.checkpoint_path),
        "UPSTREAM_METRICS_HOST": "127.0.0.1",
        "UPSTREAM_METRICS_PORT": str(port),
        "UPSTREAM_BATCH_MAX_SIZE": "4",
        "UPSTREAM_BATCH_MAX_WAIT_MS": "20",
        "UPSTREAM_MAX_POLL_RECORDS": "25",
        **{f"UPSTREAM_{k.upper()}": str(v) for k, v in FAST_GROUP_CONSUMER.items()},
    }
    # 120 users, each a few views then a conversion; the newest conversion is what must be seen.
    stream, last_conversion = [], {}
    for i in range(120):
        user, ts = f"user-{i:03d}", BASE_MS + 10 * i
        stream += [make_event(user, "view", ts), make_event(user, "view", ts + 1)]
        stream.append(make_event(user, "conversion", ts + 2))
        last_conversion[user] = ts + 2
    first_half, second_half = stream[: len(stream) // 2], stream[len(stream) // 2 :]

    worker = ServiceProcess("upstream_service", env=env, name="upstream-crash-1")
    with worker:
        worker.wait_ready(f"http://127.0.0.1:{port}/readyz", timeout=60)
        send(*first_half)
        worker.wait_until(
            lambda: newest_seen(redis_client, "user-005") >= 0, timeout=30, what="first embeddings"
        )
        worker.kill(signal.SIGKILL)
        worker.wait(timeout=10)
    assert worker.returncode == -signal.SIGKILL

    send(*second_half)  # produced while no worker runs
    restarted = ServiceProcess("upstream_service", env=env, name="upstream-crash-2")
    with restarted:
        # The dead member holds its partitions until its session times out: allow for that.
        restarted.wait_ready(f"http://127.0.0.1:{port}/readyz", timeout=60)
        wait_for(
            lambda: all(newest_seen(redis_client, u) >= t for u, t in last_conversion.items()),
            60,
            "every user's embedding to see their conversion",
        )
        restarted.stop(timeout=30)
    assert restarted.returncode == 0, restarted.log_tail()
