"""Properties of POST /v1/rank through the real app and a real redis-server (hypothesis).

For random requests, stored histories and embeddings, the service's probabilities equal the
offline model's on the same records; and the history reaches the score: adding one event to a
user's stored history changes what the service answers.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared_model.config import tiny_config
from shared_model.contract import ActionType, HistoryRecord, merge_histories, stable_hash
from tests.ranker_service.helpers import NOW_MS, offline_probs, write_embedding, write_history

CFG = tiny_config("online")  # the conftest checkpoints' config
PROPERTY_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,  # the same examples on every run
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

ids = st.text(alphabet="abcdefghij-0123456789", min_size=1, max_size=12)
unit = st.floats(-2.0, 2.0, allow_nan=False, width=32)


@st.composite
def candidates(draw) -> list[dict]:
    ad_ids = draw(st.lists(ids, min_size=1, max_size=8, unique=True))
    out = []
    for ad_id in ad_ids:
        cand = {
            "ad_id": ad_id,
            "advertiser_id": draw(ids),
            "content_embedding": draw(st.lists(unit, min_size=CFG.content_dim,
                                               max_size=CFG.content_dim)),
            "floats": draw(st.lists(st.floats(0.0, 1.0, width=32), min_size=CFG.n_candidate_floats,
                                    max_size=CFG.n_candidate_floats)),
        }  # fmt: skip
        if draw(st.booleans()):
            cand["bid"] = draw(st.floats(0.01, 10.0))
        out.append(cand)
    return out


@st.composite
def history_records(draw, max_size: int = CFG.max_seq_len + 6) -> list[HistoryRecord]:
    n = draw(st.integers(0, max_size))
    records = []
    for i in range(n):
        content = None
        if draw(st.booleans()):
            content = tuple(draw(st.lists(unit, min_size=CFG.content_dim,
                                          max_size=CFG.content_dim)))  # fmt: skip
        records.append(
            HistoryRecord(
                timestamp_ms=NOW_MS - draw(st.integers(1, 30 * 86_400_000)),
                action_type=draw(st.sampled_from(list(ActionType))),
                item_hash=stable_hash(draw(ids)),
                surface_hash=stable_hash(draw(st.sampled_from(["feed", "reels", "search"]))),
                event_hash=stable_hash(f"event-{i}"),
                value=draw(st.floats(0.0, 100.0, width=32)),
                content=content,
            )
        )
    # What the ranker reads back from Redis (float16 content, float32 value).
    return [HistoryRecord.decode(r.encode()) for r in records]


def body_of(user_id: str, cands: list[dict], surface: str, device: str) -> dict:
    return {
        "user_id": user_id,
        "context": {"surface": surface, "device": device, "time_ms": NOW_MS},
        "candidates": cands,
    }


def ranked(client: TestClient, body: dict) -> dict:
    response = client.post("/v1/rank", json=body)
    assert response.status_code == 200, response.text
    return response.json()


@PROPERTY_SETTINGS
@given(
    user_id=ids,
    cands=candidates(),
    history=history_records(),
    embedding=st.none() | st.lists(unit, min_size=CFG.d_upstream, max_size=CFG.d_upstream),
    surface=st.sampled_from(["feed", "reels", "search"]),
    device=st.sampled_from(["ios", "android", "web"]),
)
def test_service_scores_equal_the_offline_model(
    client: TestClient,
    redis_client: redis.Redis,
    checkpoint_dir: Path,
    user_id,
    cands,
    history,
    embedding,
    surface,
    device,
) -> None:
    redis_client.flushall()  # one test, many examples
    write_history(redis_client, user_id, history)
    stored = None if embedding is None else write_embedding(redis_client, user_id, embedding)
    body = body_of(user_id, cands, surface, device)
    out = ranked(client, body)
    expected_history = merge_histories(history, limit=CFG.max_seq_len)
    assert out["history_length"] == len(expected_history)
    assert out["upstream"]["status"] == ("absent" if stored is None else "used")
    probs = offline_probs(checkpoint_dir, body, expected_history, stored and stored.vector)
    by_ad = {c["ad_id"]: c for c in out["candidates"]}
    assert len(by_ad) == len(cands)
    for i, cand in enumerate(cands):
        got = by_ad[cand["ad_id"]]
        # fp32 up to summation order (the server's thread count may differ from this one's).
        assert got["p_ctr"] == pytest.approx(probs[i, 0].item(), rel=2e-5, abs=1e-7)
        assert got["p_cvr"] == pytest.approx(probs[i, 1].item(), rel=2e-5, abs=1e-7)
        expected_score = got["p_ctr"] * got["p_cvr"] * cand.get("bid", 1.0)
        assert got["score"] == pytest.approx(expected_score, rel=1e-9)
    scores = [c["score"] for c in out["candidates"]]
    assert scores == sorted(scores, reverse=True)


@PROPERTY_SETTINGS
@given(
    cands=candidates(),
    history=history_records(max_size=CFG.max_seq_len - 1),
    newest=history_records(max_size=1).filter(bool),
)
def test_one_more_event_in_the_history_changes_the_scores(
    client: TestClient, redis_client: redis.Redis, cands, history, newest
) -> None:
    redis_client.flushall()
    body = body_of("u-history", cands, "feed", "ios")
    write_history(redis_client, "u-history", history)
    before = ranked(client, body)
    # The added event is the most recent one, so it is inside the T the ranker reads.
    latest = max([r.timestamp_ms for r in history], default=NOW_MS - 10_000)
    added = HistoryRecord.decode(
        HistoryRecord(
            min(latest + 1, NOW_MS - 1), newest[0].action_type, newest[0].item_hash,
            newest[0].surface_hash, stable_hash("event-added"), newest[0].value, newest[0].content,
        ).encode()
    )  # fmt: skip
    write_history(redis_client, "u-history", [added])
    after = ranked(client, body)
    assert after["history_length"] == before["history_length"] + 1
    p_before = {c["ad_id"]: (c["p_ctr"], c["p_cvr"]) for c in before["candidates"]}
    p_after = {c["ad_id"]: (c["p_ctr"], c["p_cvr"]) for c in after["candidates"]}
    changed = max(
        abs(a - b) for ad in p_before for a, b in zip(p_before[ad], p_after[ad], strict=True)
    )
    assert changed > 1e-6, (p_before, p_after)
