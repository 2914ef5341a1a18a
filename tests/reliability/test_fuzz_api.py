"""Property-based fuzzing of the ranker's HTTP API from its own OpenAPI schema (schemathesis).

The ranker runs as a real uvicorn process; schemathesis reads ``/openapi.json`` from it and
generates schema-valid (positive) and schema-breaking (negative) requests for every operation.
Every answer must be below 500 and match its declared schema, every 4xx must carry a JSON
message, and every accepted ranking must rank exactly the candidates asked for, best first.
Then the size limits are checked over a real socket: a declared and a chunked oversized body
(413), too many candidates and too many inline events (422), and the server answers normally
afterwards.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance

from shared_model.config import tiny_config
from tests.ranker_service.helpers import rank_body
from tests.reliability.conftest import RankerProcess, ranker_env

CFG = tiny_config("online")
EXAMPLES = {"/v1/rank": 150, "/admin/reload": 40}  # per generation mode; others get 15
MAX_BODY = 64 * 1024
TRIED: Counter[str] = Counter()
ACCEPTED: Counter[str] = Counter()  # 200s whose body was checked


@pytest.fixture(scope="module")
def ranker(redis_server, checkpoints) -> Iterator[RankerProcess]:
    env = ranker_env(redis_server.url, checkpoints.online, reload_token="fuzz-token-not-sent")
    with RankerProcess(env, name="ranker-fuzz") as process:
        process.wait_ready(f"{process.base}/readyz", timeout=60)
        yield process


def rejection_has_a_message(ctx, response, case) -> None:
    """Every 4xx is JSON with a non-empty ``detail`` that says what is wrong."""
    if 400 <= response.status_code < 500:
        payload = json.loads(response.content)
        detail = payload.get("detail")
        assert detail, f"{response.status_code} without a message: {payload}"
        if isinstance(detail, list):
            assert all(d.get("msg") and d.get("loc") is not None for d in detail), detail


def accepted_rankings_are_consistent(ctx, response, case) -> None:
    """Every 200 from /v1/rank ranks exactly the candidates asked for, best score first."""
    if case.path != "/v1/rank" or response.status_code != 200:
        return
    payload = json.loads(response.content)
    asked = [c["ad_id"] for c in case.body["candidates"]]
    ranked = payload["candidates"]
    assert sorted(c["ad_id"] for c in ranked) == sorted(asked), (asked, ranked)
    scores = [c["score"] for c in ranked]
    assert scores == sorted(scores, reverse=True), scores
    assert payload["history_length"] >= 0
    ACCEPTED[case.path] += 1


def fuzz_operation(op, mode: GenerationMode, n: int, base: str, statuses: Counter) -> None:
    @settings(
        max_examples=n,
        deadline=None,
        database=None,
        derandomize=True,  # seeded: the same inputs on every run
        suppress_health_check=list(HealthCheck),
    )
    @given(case=op.as_strategy(generation_mode=mode))
    def fuzz(case) -> None:
        response = case.call(base_url=base)
        statuses[(op.path, response.status_code)] += 1
        TRIED[f"{op.label} {mode.value}"] += 1
        case.validate_response(
            response,
            checks=[
                not_a_server_error,
                rejection_has_a_message,
                response_schema_conformance,
                accepted_rankings_are_consistent,
            ],
        )

    try:
        fuzz()
    except Unsatisfiable:
        # GET /healthz and friends take no input: there is nothing to make invalid.
        if mode is not GenerationMode.NEGATIVE:
            raise


def test_every_operation_from_the_openapi_schema(ranker: RankerProcess) -> None:
    schema = schemathesis.openapi.from_url(f"{ranker.base}/openapi.json")
    statuses: Counter[tuple[str, int]] = Counter()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/rank", "/admin/reload", "/readyz"}
    for op in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz_operation(op, mode, EXAMPLES.get(op.path, 15), ranker.base, statuses)
    assert not [k for k in statuses if k[1] >= 500], statuses
    # Without the token the fuzzer can never reload the model.
    reload_statuses = {s for (p, s) in statuses if p == "/admin/reload"}
    assert 401 in reload_statuses and all(400 <= s < 500 for s in reload_statuses)
    # The rank endpoint saw both acceptances and rejections: the fuzzer reached the model.
    rank_statuses = {s for (p, s) in statuses if p == "/v1/rank"}
    assert 422 in rank_statuses
    assert ACCEPTED["/v1/rank"] == statuses[("/v1/rank", 200)] > 0
    print(f"\nschemathesis: {sum(TRIED.values())} requests {dict(TRIED)}")
    print(f"statuses: {dict(sorted(statuses.items()))}")


def test_size_limits_over_a_real_socket(ranker: RankerProcess) -> None:
    with httpx.Client(base_url=ranker.base, timeout=30, trust_env=False) as http:
        big = b'{"user_id": "' + b"x" * (MAX_BODY + 10) + b'"}'
        r = http.post("/v1/rank", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413 and "max_body_bytes" in r.json()["detail"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
            yield b'{"user_id": "'
            for _ in range(20):
                yield b"y" * 8192
            yield b'"}'

        r = http.post("/v1/rank", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and "max_body_bytes" in r.json()["detail"]

        too_many = rank_body(51, CFG)  # RANKER_MAX_CANDIDATES=50
        for c in too_many["candidates"]:
            c.pop("content_embedding")  # keep the body under the size limit
        r = http.post("/v1/rank", json=too_many)
        assert r.status_code == 422 and "max_candidates=50" in r.text

        event = {"timestamp_ms": 1_750_000_000_000, "action_type": "click", "item_id": "i"}
        too_long = rank_body(1, CFG, events=[event] * 21)  # RANKER_MAX_INLINE_EVENTS=20
        r = http.post("/v1/rank", json=too_long)
        assert r.status_code == 422 and "20" in r.text

        r = http.post("/v1/rank", json=rank_body(2, CFG))  # and it still serves
        assert r.status_code == 200 and len(r.json()["candidates"]) == 2
