"""Faults around the ranker, which runs as a real ``uvicorn ranker_service.main:app`` process.

* Redis stopped and restarted under a stream of requests: every answer is a 200, the embedding
  is marked unavailable while Redis is down, and it is used again after;
* corrupt embedding and history records: treated as missing, counted in /metrics; then the
  real upstream worker's next refresh overwrites the record and the ranker uses it.
"""

from __future__ import annotations

import threading
import time
import uuid

import httpx
import pytest

from loadtests.stack.servers import RedisServer
from shared_model.config import tiny_config
from shared_model.contract import (
    EMBEDDING_FIELD_NEWEST,
    EMBEDDING_FIELD_RECORD,
    ActionType,
    EmbeddingDType,
    EmbeddingRecord,
    HistoryRecord,
    UserEvent,
    embedding_key,
    history_key,
    source_of,
    stable_hash,
)
from tests.ranker_service.helpers import rank_body
from tests.reliability.conftest import (
    RankerProcess,
    UpstreamProcess,
    http_get,
    metric,
    newest_seen,
    ranker_env,
    send_events,
    upstream_env,
    wait_for,
)

CFG = tiny_config("online")


def body(user_id: str, n: int = 3) -> dict:
    b = rank_body(n, CFG, user_id=user_id)
    del b["context"]["time_ms"]  # the server's clock: ages of real records are real
    return b


def put_embedding(client, user_id: str, version: str, *, dim: int = CFG.d_upstream) -> None:
    now = int(time.time() * 1000)
    record = EmbeddingRecord((0.25,) * dim, version, now, now - 1, 5)
    client.hset(
        embedding_key(user_id),
        mapping={EMBEDDING_FIELD_RECORD: record.encode(), EMBEDDING_FIELD_NEWEST: now - 1},
    )


@pytest.mark.slow
def test_redis_restart_under_load_never_fails_a_request(checkpoints) -> None:
    with RedisServer() as private_redis:
        ranker = RankerProcess(ranker_env(private_redis.url, checkpoints.online), name="ranker-rr")
        with ranker:
            ranker.wait_ready(f"{ranker.base}/readyz", timeout=60)
            put_embedding(private_redis.client(), "rr-user", checkpoints.upstream_version)

            phase = ["up"]
            results: list[tuple[str, int, str | None]] = []  # (phase, status, outcome)
            stop = threading.Event()

            def stream() -> None:
                with httpx.Client(base_url=ranker.base, timeout=10, trust_env=False) as http:
                    while not stop.is_set():
                        before = phase[0]
                        r = http.post("/v1/rank", json=body("rr-user"))
                        outcome = r.json()["upstream"]["outcome"] if r.status_code == 200 else None
                        if phase[0] == before:  # discard answers that straddle a transition
                            results.append((before, r.status_code, outcome))

            def count(p: str, outcomes: set[str] | None = None) -> int:
                return sum(
                    1 for q, _, o in list(results) if q == p and (not outcomes or o in outcomes)
                )

            worker = threading.Thread(target=stream, daemon=True)
            worker.start()
            try:
                wait_for(lambda: count("up", {"hit"}) >= 20, 30, "20 answers using the embedding")
                phase[0] = "stopping"
                private_redis.stop()
                phase[0] = "down"
                wait_for(lambda: count("down") >= 40, 30, "40 answers while Redis is down")
                assert http_get(f"{ranker.base}/readyz")[0] == 503
                assert http_get(f"{ranker.base}/healthz")[0] == 200
                phase[0] = "restarting"
                private_redis.start()  # same port, empty: the upstream worker would refill it
                put_embedding(private_redis.client(), "rr-user", checkpoints.upstream_version)
                phase[0] = "back"
                wait_for(lambda: count("back", {"hit"}) >= 20, 30, "20 answers using it again")
            finally:
                stop.set()
                worker.join(timeout=30)
            statuses = {s for _, s, _ in results}
            assert statuses == {200}, f"non-200 answers: {statuses}"
            down = {o for p, _, o in results if p == "down"}
            assert down <= {"unavailable", "timeout"}, down
            # While Redis is up the stored embedding is used; on a loaded machine a lookup may
            # overrun its budget (a timeout, also a 200), but never reads as missing or broken.
            up = [o for p, _, o in results if p == "up"]
            assert set(up) <= {"hit", "timeout"} and up.count("hit") >= 20, up
            assert http_get(f"{ranker.base}/readyz")[0] == 200
            text = ranker.metrics()
            assert (
                metric(text, "ranker_request_duration_seconds_count", {"outcome": "server_error"})
                == 0
            )
            assert metric(text, "ranker_embedding_lookups_total", {"outcome": "unavailable"}) > 0
            print(
                f"\nranker redis restart: {len(results)} requests, all 200; "
                f"{count('down')} while Redis was down"
            )


def corrupt_embedding_records(version: str) -> dict[str, bytes]:
    """user -> a record the ranker must refuse (wrong length, dtype, version, width)."""
    now = int(time.time() * 1000)
    good = EmbeddingRecord((0.25,) * CFG.d_upstream, version, now, now - 1, 5).encode()
    wrong_version, wrong_dtype, f32_as_f16 = (
        bytearray(good),
        bytearray(good),
        bytearray(
            EmbeddingRecord(
                (0.25,) * CFG.d_upstream, version, now, now - 1, 5, EmbeddingDType.FLOAT32
            ).encode()
        ),
    )
    wrong_version[4] = 99
    wrong_dtype[5] = 7
    f32_as_f16[5] = int(EmbeddingDType.FLOAT16)
    wide = EmbeddingRecord((0.25,) * (CFG.d_upstream + 8), version, now, now - 1, 5).encode()
    return {
        "cr-truncated": good[:-2],
        "cr-padded": good + b"\x00\x00",
        "cr-wrong-version": bytes(wrong_version),
        "cr-wrong-dtype": bytes(wrong_dtype),
        "cr-dtype-mismatch": bytes(f32_as_f16),
        "cr-wrong-width": wide,
        "cr-not-a-record": b"\x00" * 7,
    }


def corrupt_history_members() -> list[bytes]:
    good = HistoryRecord(
        int(time.time() * 1000) - 5000, ActionType.CLICK, stable_hash("i"), 1, 2, 1.0, (0.5,) * 4
    ).encode()
    wrong_version, wrong_action = bytearray(good), bytearray(good)
    wrong_version[0] = 99
    wrong_action[1] = 42
    return [good[:-1], good + b"\x01", bytes(wrong_version), bytes(wrong_action), b"junk"]


def test_corrupt_records_counted_then_overwritten_by_the_worker(
    kafka_broker, redis_server, redis_client, checkpoints, new_topic, producer_for
) -> None:
    corrupt = corrupt_embedding_records(checkpoints.upstream_version)
    bad_members = corrupt_history_members()
    now = int(time.time() * 1000)
    for user, raw in corrupt.items():
        redis_client.hset(
            embedding_key(user), mapping={EMBEDDING_FIELD_RECORD: raw, EMBEDDING_FIELD_NEWEST: 1}
        )
        for i, member in enumerate(bad_members):
            redis_client.zadd(history_key(user, "eng"), {member: now - 10_000 + i})
    ranker = RankerProcess(ranker_env(redis_server.url, checkpoints.online), name="ranker-corrupt")
    with ranker:
        ranker.wait_ready(f"{ranker.base}/readyz", timeout=60)
        with httpx.Client(base_url=ranker.base, timeout=10, trust_env=False) as http:
            for user in corrupt:
                r = http.post("/v1/rank", json=body(user))
                assert r.status_code == 200, r.text
                out = r.json()
                assert out["upstream"] == {
                    "status": "absent", "outcome": "corrupt", "age_ms": None, "model_version": None
                }  # fmt: skip
                assert out["history_source"] == "redis" and out["history_length"] == 0
            text = ranker.metrics()
            assert metric(text, "ranker_embedding_lookups_total", {"outcome": "corrupt"}) == len(
                corrupt
            )
            assert metric(text, "ranker_history_corrupt_records_total") == len(corrupt) * len(
                bad_members
            )

            # The real upstream worker's next refresh replaces every corrupt record...
            topic = new_topic(kafka_broker, partitions=1)
            env = upstream_env(
                bootstrap=kafka_broker.bootstrap,
                redis_url=redis_server.url,
                topic=topic,
                checkpoint=checkpoints.upstream,
            )
            events = [
                UserEvent(f"e-{uuid.uuid4().hex[:8]}", user, now + i, "conversion", "item-3")
                for i, user in enumerate(corrupt)
            ]
            with UpstreamProcess(env, name="upstream-overwrite") as worker:
                worker.wait_worker_ready()
                send_events(producer_for(kafka_broker.bootstrap), topic, events)
                for e in events:
                    worker.wait_until(
                        lambda e=e: newest_seen(redis_client, e.user_id) == e.timestamp_ms,
                        timeout=30,
                        what=f"{e.user_id} to be refreshed",
                    )
        # ... and the ranker uses what the worker wrote (same upstream model version). A new
        # connection: the first one sat idle past the server's keep-alive timeout meanwhile.
        with httpx.Client(base_url=ranker.base, timeout=10, trust_env=False) as http:
            for e in events:
                out = http.post("/v1/rank", json=body(e.user_id)).json()
                assert out["upstream"]["status"] == "used", out["upstream"]
                assert out["upstream"]["model_version"] == checkpoints.upstream_version
                assert out["history_length"] == 1  # the conversion; corrupt members skipped
            # The corrupt members stay (skipped by every reader) beside the new conversion.
            for e in events:
                key = history_key(e.user_id, source_of(ActionType.CONVERSION))
                assert redis_client.zcard(key) == len(bad_members) + 1
                assert redis_client.zscore(key, e.to_history_record().encode()) == e.timestamp_ms
