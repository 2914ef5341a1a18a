"""No silent degradation: a request ranked without a feature says so, counted by reason.

Through the real app on a real redis-server: paused (CLIENT PAUSE: the read outlives the
budget), stopped (connection refused), and holding corrupt, foreign or no records. Also the
content-vector cache as the service uses it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from loadtests.stack.polling import wait_for
from loadtests.stack.servers import RedisServer
from ranker_service.main import create_app
from ranker_service.schemas import RankResponse
from shared_model.config import LLaTTEConfig
from shared_model.contract import content_embedding_key, history_key
from tests.ranker_service.helpers import (
    make_history,
    metric_value,
    rank_body,
    ranker_settings,
    write_content,
    write_embedding,
    write_history,
)


def _metric(client: TestClient, feature: str, reason: str) -> float:
    prefix = f'ranker_degraded_requests_total{{feature="{feature}",reason="{reason}"}} '
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return 0.0


def _rank(client: TestClient, body: dict) -> dict:
    response = client.post("/v1/rank", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def _degraded(out: dict) -> dict[str, tuple[str, int]]:
    return {d["feature"]: (d["reason"], d["count"]) for d in out["degraded"]}


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test alone: pausing or stopping it disturbs no other test."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def short_budget_client(own_redis: RedisServer, checkpoint_dir: Path) -> Iterator[TestClient]:
    app = create_app(ranker_settings(own_redis.url, checkpoint_dir, redis_budget_ms=200))
    with TestClient(app) as client:
        yield client


def _with_content_ids(body: dict, tiny_cfg: LLaTTEConfig, client: redis.Redis) -> dict:
    for cand in body["candidates"]:
        content_id = f"content-{cand['ad_id']}"
        write_content(client, content_id, cand.pop("content_embedding"))
        cand["content_id"] = content_id
    return body


def test_complete_request_is_not_degraded(
    short_budget_client: TestClient, own_redis: RedisServer, tiny_cfg: LLaTTEConfig
) -> None:
    admin = own_redis.client()
    write_embedding(admin, "u1", [0.1] * tiny_cfg.d_upstream)
    write_history(admin, "u1", make_history(5, tiny_cfg.content_dim))
    out = _rank(short_budget_client, _with_content_ids(rank_body(3, tiny_cfg), tiny_cfg, admin))
    assert out["degraded"] == []
    assert out["history_length"] == 5 and out["upstream"]["status"] == "used"


def test_paused_redis_is_a_counted_timeout(
    short_budget_client: TestClient, own_redis: RedisServer, tiny_cfg: LLaTTEConfig
) -> None:
    admin = own_redis.client()
    write_embedding(admin, "u1", [0.1] * tiny_cfg.d_upstream)
    write_history(admin, "u1", make_history(5, tiny_cfg.content_dim))
    body = rank_body(3, tiny_cfg)
    body["candidates"][0].pop("content_embedding")
    body["candidates"][0]["content_id"] = "never-cached"
    before = _metric(short_budget_client, "history", "redis_timeout")
    admin.execute_command("CLIENT", "PAUSE", 3000, "ALL")  # longer than the 200 ms budget
    out = _rank(short_budget_client, body)
    assert _degraded(out) == {
        "history": ("redis_timeout", 1),
        "embedding": ("redis_timeout", 1),
        "content": ("redis_timeout", 1),
    }
    assert out["history_source"] == "none" and out["upstream"]["outcome"] == "timeout"
    assert _metric(short_budget_client, "history", "redis_timeout") == before + 1
    assert _metric(short_budget_client, "embedding", "redis_timeout") >= 1
    # Once the pause ends the same request has its history and embedding again.
    wait_for(
        lambda: "history" not in _degraded(_rank(short_budget_client, body)),
        timeout=15,
        what="ranking with the stored history after CLIENT PAUSE",
    )


def test_stopped_redis_is_counted_unavailable(
    short_budget_client: TestClient, own_redis: RedisServer, tiny_cfg: LLaTTEConfig
) -> None:
    own_redis.stop()
    out = _rank(short_budget_client, rank_body(2, tiny_cfg))
    assert _degraded(out) == {
        "history": ("redis_unavailable", 1),
        "embedding": ("redis_unavailable", 1),
    }
    assert _metric(short_budget_client, "history", "redis_unavailable") == 1
    assert _metric(short_budget_client, "embedding", "redis_unavailable") == 1


def test_bad_records_are_named(
    client: TestClient, redis_client: redis.Redis, tiny_cfg: LLaTTEConfig
) -> None:
    # A new user: nothing stored.
    out = _rank(client, rank_body(2, tiny_cfg, user_id="new-user"))
    assert _degraded(out) == {"history": ("missing", 1), "embedding": ("missing", 1)}

    # Two corrupt history members among five good ones; an embedding of another upstream.
    history = make_history(5, tiny_cfg.content_dim)
    write_history(redis_client, "u1", history)
    redis_client.zadd(history_key("u1", "eng"), {b"\x01short": history[-1].timestamp_ms})
    redis_client.zadd(history_key("u1", "imp"), {b"\x07" + b"x" * 39: history[0].timestamp_ms})
    write_embedding(redis_client, "u1", [0.1] * tiny_cfg.d_upstream, model_version="other")
    body = rank_body(2, tiny_cfg)
    body["candidates"][1].pop("content_embedding")
    body["candidates"][1]["content_id"] = "absent-content"
    redis_client.set(content_embedding_key("bad-content"), b"LLEM-broken")
    body["candidates"][0].pop("content_embedding")
    body["candidates"][0]["content_id"] = "bad-content"
    before = _metric(client, "history", "corrupt_record")
    out = _rank(client, body)
    assert out["history_length"] == 5
    assert {(d["feature"], d["reason"], d["count"]) for d in out["degraded"]} == {
        ("history", "corrupt_record", 2),
        ("embedding", "version_mismatch", 1),
        ("content", "missing", 1),
        ("content", "corrupt_record", 1),
    }
    assert _metric(client, "history", "corrupt_record") == before + 1  # requests, not records
    assert _metric(client, "embedding", "version_mismatch") >= 1


def test_inline_events_are_not_a_missing_history(
    client: TestClient, redis_client: redis.Redis, tiny_cfg: LLaTTEConfig
) -> None:
    write_embedding(redis_client, "u1", [0.1] * tiny_cfg.d_upstream)
    event = {"timestamp_ms": 1_749_999_000_000, "action_type": "click", "item_id": "i1"}
    out = _rank(client, rank_body(2, tiny_cfg, events=[event]))
    assert out["history_source"] == "inline" and out["degraded"] == []


def test_content_cache_serves_repeated_ids(
    client: TestClient, redis_client: redis.Redis, tiny_cfg: LLaTTEConfig
) -> None:
    """A cached vector is used without a Redis read: the key can even be gone meanwhile."""
    body = rank_body(3, tiny_cfg)
    reference = _rank(client, body)
    by_id = _with_content_ids(rank_body(3, tiny_cfg), tiny_cfg, redis_client)
    first = _rank(client, by_id)
    for cand in by_id["candidates"]:
        redis_client.delete(content_embedding_key(cand["content_id"]))
    second = _rank(client, by_id)
    assert first["degraded"] == second["degraded"] == reference["degraded"]
    for out in (first, second):
        for a, b in zip(out["candidates"], reference["candidates"], strict=True):
            assert a["ad_id"] == b["ad_id"] and a["score"] == pytest.approx(b["score"], rel=1e-6)
    metrics = client.get("/metrics").text
    assert 'ranker_content_cache_lookups_total{result="hit"}' in metrics
    hits = next(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith('ranker_content_cache_lookups_total{result="hit"}')
    )
    assert hits >= 3
    assert metric_value(metrics, "ranker_content_cache_entries") >= 1


def test_response_json_is_the_declared_model(client: TestClient, tiny_cfg: LLaTTEConfig) -> None:
    """Serialised once (model_dump_json), the body still matches RankResponse field for field."""
    response = client.post("/v1/rank", json=rank_body(2, tiny_cfg))
    assert response.headers["content-type"] == "application/json"
    assert "total;dur=" in response.headers["server-timing"]
    parsed = RankResponse.model_validate_json(response.content)
    assert parsed.model_dump(mode="json") == response.json()
