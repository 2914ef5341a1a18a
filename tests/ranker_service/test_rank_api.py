"""Contract tests of POST /v1/rank through the real app and a real redis-server."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
import torch
from fastapi.testclient import TestClient

from ranker_service.features import inline_history
from ranker_service.schemas import InlineEvent
from shared_model.config import LLaTTEConfig
from shared_model.contract import (
    embedding_key,
    history_key,
    merge_histories,
)
from tests.ranker_service.helpers import (
    NOW_MS,
    UPSTREAM_VERSION,
    make_history,
    metric_value,
    offline_probs,
    rank_body,
    write_content,
    write_embedding,
    write_history,
)


def _vector(cfg: LLaTTEConfig, seed: int = 7) -> list[float]:
    return torch.randn(cfg.d_upstream, generator=torch.Generator().manual_seed(seed)).tolist()


def _rank(client: TestClient, body: dict) -> dict:
    response = client.post("/v1/rank", json=body)
    assert response.status_code == 200, response.text
    return response.json()


# ------------------------------------------------------------------------------------------
# Upstream embedding outcomes
# ------------------------------------------------------------------------------------------


def test_embedding_found_is_used(
    client: TestClient, redis_client: redis.Redis, tiny_cfg: LLaTTEConfig
) -> None:
    write_embedding(redis_client, "u1", _vector(tiny_cfg), computed_at_ms=NOW_MS - 90_000)
    out = _rank(client, rank_body(3, tiny_cfg))
    assert out["upstream"] == {
        "status": "used",
        "outcome": "hit",
        "age_ms": 90_000,
        "model_version": UPSTREAM_VERSION,
    }
    assert out["model_version"].startswith("online-")
    assert set(out["timing"]) == {"redis_ms", "model_ms", "total_ms"}


def test_no_embedding_is_absent(client: TestClient, tiny_cfg: LLaTTEConfig) -> None:
    out = _rank(client, rank_body(3, tiny_cfg))
    assert out["upstream"] == {
        "status": "absent",
        "outcome": "missing",
        "age_ms": None,
        "model_version": None,
    }


def test_version_mismatch_is_not_used(
    client: TestClient, redis_client: redis.Redis, tiny_cfg: LLaTTEConfig
) -> None:
    write_embedding(redis_client, "u1", _vector(tiny_cfg), model_version="upstream-other")
    out = _rank(client, rank_body(3, tiny_cfg))
    assert out["upstream"]["status"] == "absent"
    assert out["upstream"]["outcome"] == "version_mismatch"
    assert out["upstream"]["model_version"] == "upstream-other"


def test_stale_embedding_is_not_used(
    client: TestClient, redis_client: redis.Redis, tiny_cfg: LLaTTEConfig
) -> None:
    write_embedding(redis_client, "u1", _vector(tiny_cfg), computed_at_ms=NOW_MS - 3_601_000)
    out = _rank(client, rank_body(3, tiny_cfg))
    assert out["upstream"]["status"] == "absent"
    assert out["upstream"]["outcome"] == "stale"
    assert out["upstream"]["age_ms"] == 3_601_000


@pytest.mark.parametrize(
    "raw",
    [b"garbage", b"LLEM" + b"\x00" * 40, b""],
    ids=["garbage", "bad-header", "empty"],
)
def test_corrupt_embedding_counts_as_corrupt(
    client: TestClient, redis_client: redis.Redis, tiny_cfg: LLaTTEConfig, raw: bytes
) -> None:
    redis_client.hset(embedding_key("u1"), "record", raw)
    out = _rank(client, rank_body(3, tiny_cfg))
    assert out["upstream"]["status"] == "absent"
    assert out["upstream"]["outcome"] == "corrupt"


def test_embedding_of_wrong_width_is_corrupt(
    client: TestClient, redis_client: redis.Redis, tiny_cfg: LLaTTEConfig
) -> None:
    write_embedding(redis_client, "u1", [0.5] * (tiny_cfg.d_upstream + 1))
    assert _rank(client, rank_body(2, tiny_cfg))["upstream"]["outcome"] == "corrupt"


def test_corrupt_history_members_are_skipped(
    client: TestClient, redis_client: redis.Redis, tiny_cfg: LLaTTEConfig
) -> None:
    history = make_history(5, tiny_cfg.content_dim)
    write_history(redis_client, "u1", history)
    redis_client.zadd(history_key("u1", "eng"), {b"\x07not-a-record": NOW_MS - 1})
    name = "ranker_history_corrupt_records_total"
    before = metric_value(client.get("/metrics").text, name)
    out = _rank(client, rank_body(2, tiny_cfg))
    assert out["history_source"] == "redis"
    assert out["history_length"] == 5
    assert metric_value(client.get("/metrics").text, name) == before + 1


# ------------------------------------------------------------------------------------------
# Scores: equal to the offline model, sorted, bid-weighted
# ------------------------------------------------------------------------------------------


def test_scores_equal_offline_shared_model(
    client: TestClient, redis_client: redis.Redis, tiny_cfg: LLaTTEConfig, checkpoint_dir: Path
) -> None:
    # More events than T, across both sources: the ranker must pick the same T as offline.
    history = make_history(tiny_cfg.max_seq_len + 9, tiny_cfg.content_dim)
    write_history(redis_client, "u1", history)
    record = write_embedding(redis_client, "u1", _vector(tiny_cfg))
    body = rank_body(6, tiny_cfg)
    out = _rank(client, body)
    assert out["upstream"]["status"] == "used"
    assert out["history_length"] == tiny_cfg.max_seq_len

    expected_history = merge_histories(history, limit=tiny_cfg.max_seq_len)
    probs = offline_probs(checkpoint_dir, body, expected_history, record.vector)
    by_ad = {c["ad_id"]: c for c in out["candidates"]}
    # fp32 equality up to summation order: the server's inference thread and this process may
    # run matmuls with different thread counts (measured differences ~4e-6 relative).
    for i, cand in enumerate(body["candidates"]):
        got = by_ad[cand["ad_id"]]
        assert got["p_ctr"] == pytest.approx(probs[i, 0].item(), rel=2e-5, abs=1e-9)
        assert got["p_cvr"] == pytest.approx(probs[i, 1].item(), rel=2e-5, abs=1e-9)
    # And the shared-history pass agrees with the naive per-candidate reference.
    naive = offline_probs(checkpoint_dir, body, expected_history, record.vector, shared=False)
    torch.testing.assert_close(naive, probs, rtol=1e-4, atol=1e-6)


def test_without_embedding_scores_equal_offline_absent(
    client: TestClient, redis_client: redis.Redis, tiny_cfg: LLaTTEConfig, checkpoint_dir: Path
) -> None:
    write_embedding(redis_client, "u1", _vector(tiny_cfg), model_version="upstream-other")
    body = rank_body(4, tiny_cfg)
    out = _rank(client, body)
    probs = offline_probs(checkpoint_dir, body, [], None)
    by_ad = {c["ad_id"]: c for c in out["candidates"]}
    for i, cand in enumerate(body["candidates"]):
        assert by_ad[cand["ad_id"]]["p_ctr"] == pytest.approx(probs[i, 0].item(), rel=2e-5)


def test_candidates_sorted_by_score_with_bid(client: TestClient, tiny_cfg: LLaTTEConfig) -> None:
    body = rank_body(8, tiny_cfg)
    for i, cand in enumerate(body["candidates"]):
        if i % 2:
            cand["bid"] = 0.5 + i
    out = _rank(client, body)
    scores = [c["score"] for c in out["candidates"]]
    assert scores == sorted(scores, reverse=True)
    bids = {c["ad_id"]: c.get("bid") for c in body["candidates"]}
    for c in out["candidates"]:
        base = c["p_ctr"] * c["p_cvr"]
        expected = base * bids[c["ad_id"]] if bids[c["ad_id"]] is not None else base
        assert c["score"] == pytest.approx(expected, rel=1e-9)
    assert sorted(c["ad_id"] for c in out["candidates"]) == sorted(bids)


def test_inline_events_replace_stored_history(
    client: TestClient, redis_client: redis.Redis, tiny_cfg: LLaTTEConfig, checkpoint_dir: Path
) -> None:
    write_history(redis_client, "u1", make_history(5, tiny_cfg.content_dim, seed=3))
    events = [
        {"timestamp_ms": NOW_MS - 50_000 + 1000 * i, "action_type": a, "item_id": f"it{i}"}
        for i, a in enumerate(["click", "view", 4, "impression"])
    ]
    body = rank_body(3, tiny_cfg, events=events)
    out = _rank(client, body)
    assert out["history_source"] == "inline"
    assert out["history_length"] == 4

    records = inline_history([InlineEvent.model_validate(e) for e in events], "u1")
    probs = offline_probs(checkpoint_dir, body, records, None)
    by_ad = {c["ad_id"]: c for c in out["candidates"]}
    for i, cand in enumerate(body["candidates"]):
        assert by_ad[cand["ad_id"]]["p_cvr"] == pytest.approx(probs[i, 1].item(), rel=2e-5)


def test_content_by_id_equals_content_inline(
    client: TestClient, redis_client: redis.Redis, tiny_cfg: LLaTTEConfig
) -> None:
    body = rank_body(3, tiny_cfg)
    inline_out = _rank(client, body)
    for cand in body["candidates"]:
        content_id = f"content-{cand['ad_id']}"
        write_content(redis_client, content_id, cand.pop("content_embedding"))
        cand["content_id"] = content_id
    by_id_out = _rank(client, body)
    assert by_id_out["candidates"] == inline_out["candidates"]
    assert 'ranker_content_lookups_total{outcome="hit"} 3.0' in client.get("/metrics").text


# ------------------------------------------------------------------------------------------
# Redis trouble never fails a request
# ------------------------------------------------------------------------------------------


def test_redis_stopped_mid_test_still_ranks(
    client: TestClient, redis_client: redis.Redis, redis_server, tiny_cfg: LLaTTEConfig
) -> None:
    write_embedding(redis_client, "u1", _vector(tiny_cfg))
    assert _rank(client, rank_body(3, tiny_cfg))["upstream"]["status"] == "used"
    assert client.get("/readyz").status_code == 200

    redis_server.stop()
    for _ in range(3):
        out = _rank(client, rank_body(3, tiny_cfg))
        assert out["upstream"]["status"] == "absent"
        assert out["upstream"]["outcome"] in ("unavailable", "timeout")
        assert out["history_source"] == "none"
        assert len(out["candidates"]) == 3
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["redis_reachable"] is False
    assert client.get("/healthz").status_code == 200

    redis_server.start()  # comes back empty; the client reconnects
    write_embedding(redis_server.client(), "u1", _vector(tiny_cfg))
    assert _rank(client, rank_body(3, tiny_cfg))["upstream"]["status"] == "used"
    metrics = client.get("/metrics").text
    assert 'ranker_embedding_lookups_total{outcome="unavailable"}' in metrics
