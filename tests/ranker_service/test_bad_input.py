"""Every kind of bad input gets a 4xx whose message names the problem, never a 500."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from shared_model.config import tiny_config
from tests.ranker_service.helpers import NOW_MS, metric_value, rank_body

CFG = tiny_config("online")
GOOD = rank_body(2, CFG)


def _with(mutate: Callable[[dict], object]) -> dict:
    body = copy.deepcopy(GOOD)
    mutate(body)
    return body


def _event(**overrides: object) -> dict:
    return {"timestamp_ms": NOW_MS - 1000, "action_type": "click", "item_id": "i1", **overrides}


# (case id, body, status, words the message must contain)
JSON_CASES = [
    ("unknown-top-field", _with(lambda b: b.update(extra=1)), 422, ["extra", "not permitted"]),
    (
        "unknown-candidate-field",
        _with(lambda b: b["candidates"][0].update(price=3)),
        422,
        ["price"],
    ),
    ("missing-user", _with(lambda b: b.pop("user_id")), 422, ["user_id", "missing"]),
    ("user-id-int", _with(lambda b: b.update(user_id=5)), 422, ["user_id", "string"]),
    ("user-id-braces", _with(lambda b: b.update(user_id="a{b}")), 422, ["user_id", "pattern"]),
    (
        "float-as-string",
        _with(lambda b: b["candidates"][0].update(floats=["1.5", 2.0])),
        422,
        ["floats", "number"],
    ),
    (
        "bool-as-float",
        _with(lambda b: b["candidates"][0].update(bid=True)),
        422,
        ["bid", "number"],
    ),
    ("negative-bid", _with(lambda b: b["candidates"][0].update(bid=-1.0)), 422, ["bid"]),
    ("empty-candidates", _with(lambda b: b.update(candidates=[])), 422, ["candidates"]),
    (
        "too-many-candidates",
        _with(lambda b: b.update(candidates=b["candidates"] * 26)),
        422,
        ["too many candidates", "52", "max_candidates=50"],
    ),
    (
        "content-width",
        _with(lambda b: b["candidates"][1].update(content_embedding=[0.1] * 3)),
        422,
        ["candidates[1].content_embedding", "content_dim=6"],
    ),
    (
        "floats-count",
        _with(lambda b: b["candidates"][0].update(floats=[0.1] * 5)),
        422,
        ["candidates[0].floats", "n_candidate_floats=2"],
    ),
    (
        "time-out-of-range",
        _with(lambda b: b["context"].update(time_ms=12)),
        422,
        ["time_ms", "greater than or equal"],
    ),
    ("context-missing-device", _with(lambda b: b["context"].pop("device")), 422, ["device"]),
    (
        "too-many-events",
        _with(lambda b: b.update(events=[_event()] * 21)),
        422,
        ["too many inline events", "max_inline_events=20"],
    ),
    (
        "event-bad-action",
        _with(lambda b: b.update(events=[_event(action_type="purchase")])),
        422,
        ["events[0]", "unknown action_type"],
    ),
    (
        "event-unknown-field",
        _with(lambda b: b.update(events=[_event(user_id="x")])),
        422,
        ["user_id", "not permitted"],
    ),
    (
        "event-content-width",
        _with(lambda b: b.update(events=[_event(content_embedding=[1.0])])),
        422,
        ["events[0].content_embedding", "content_dim=6"],
    ),
]


@pytest.fixture
def ranker(app_client: TestClient) -> Iterator[TestClient]:
    # Bad input is rejected before Redis is read, so the session server's state is irrelevant.
    yield app_client


@pytest.mark.parametrize(("body", "status", "words"), [c[1:] for c in JSON_CASES],
                         ids=[c[0] for c in JSON_CASES])  # fmt: skip
def test_bad_json_body(ranker: TestClient, body: dict, status: int, words: list[str]) -> None:
    response = ranker.post("/v1/rank", json=body)
    assert response.status_code == status, response.text
    for word in words:
        assert word in response.text, (word, response.text)


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (json.dumps(GOOD).replace("1750000000000", "NaN", 1), ["time_ms"]),
        ('{"x": 1, ' + json.dumps(GOOD)[1:], ["not permitted"]),
        ("{not json", ["JSON decode error"]),
        ("", ["body"]),
    ],
    ids=["nan-timestamp", "unknown-first-field", "invalid-json", "empty-body"],
)
def test_malformed_text_body(ranker: TestClient, raw: str, words: list[str]) -> None:
    response = ranker.post("/v1/rank", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    for word in words:
        assert word in response.text


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_floats(ranker: TestClient, literal: str) -> None:
    text = json.dumps(_with(lambda b: b["candidates"][0].update(floats=[0.5, 123.25])))
    text = text.replace("123.25", literal)
    response = ranker.post("/v1/rank", content=text, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert "finite number" in response.text and "floats" in response.text


def test_oversized_body_declared(ranker: TestClient) -> None:
    text = json.dumps(_with(lambda b: b.update(user_id="u" * 100))) + " " * 70_000
    response = ranker.post("/v1/rank", content=text, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert "max_body_bytes=65536" in response.json()["detail"]


def test_oversized_body_chunked(ranker: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield json.dumps(GOOD)[:-1].encode()
        for _ in range(20):
            yield b" " * 4096  # no content-length: the limit applies to the stream

    response = ranker.post(
        "/v1/rank", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert "max_body_bytes=65536" in response.json()["detail"]


def test_bad_requests_counted_as_client_errors(ranker: TestClient) -> None:
    name = "ranker_request_duration_seconds_count"

    def count(outcome: str) -> float:
        return metric_value(ranker.get("/metrics").text, name, {"outcome": outcome})

    # Earlier tests on this app already counted some: compare with the counts before.
    before = {o: count(o) for o in ("client_error", "server_error", "ok")}
    assert ranker.post("/v1/rank", json={"user_id": "u"}).status_code == 422
    assert count("client_error") == before["client_error"] + 1
    assert count("server_error") == before["server_error"] == 0
    assert count("ok") == before["ok"]
