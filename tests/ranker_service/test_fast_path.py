"""RANKER_FAST_PATH: POST /v1/rank answered ahead of the router gives the route's answers.

Two apps on one Redis, one with the fast path (the default) and one serving through the
FastAPI route (the reference), get the same requests: valid ones, every kind of error, a
model that is not loaded and a handler that fails. Status, body and headers must agree, and
the ranker's request metrics must count both alike.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from starlette.requests import Request

from loadtests.stack.servers import RedisServer
from ranker_service import fast_rank
from ranker_service.main import create_app
from ranker_service.settings import Settings
from shared_model.config import LLaTTEConfig
from tests.ranker_service.helpers import (
    make_history,
    metric_value,
    rank_body,
    ranker_settings,
    write_content,
    write_embedding,
    write_history,
)

_JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def both(redis_server: RedisServer, checkpoint_dir: Path) -> Iterator[dict[str, TestClient]]:
    clients = {}
    with (
        TestClient(
            create_app(ranker_settings(redis_server.url, checkpoint_dir)),
            raise_server_exceptions=False,
        ) as fast,
        TestClient(
            create_app(ranker_settings(redis_server.url, checkpoint_dir, fast_path=False)),
            raise_server_exceptions=False,
        ) as route,
    ):
        clients["fast"], clients["route"] = fast, route
        yield clients


def _uses_fast_path(client: TestClient) -> bool:
    return any(m.cls.__name__ == "FastRank" for m in client.app.user_middleware)


def _answer(response) -> tuple[int, object, dict[str, str]]:
    """Status, body (ranking timings dropped: they differ run to run), and the headers that
    matter, Server-Timing reduced to its metric names."""
    try:
        body = response.json()
    except json.JSONDecodeError:
        body = response.text
    if isinstance(body, dict):
        body.pop("timing", None)
    headers = {k: response.headers.get(k) for k in ("content-type", "allow")}
    timing = response.headers.get("server-timing")
    headers["server-timing"] = timing and ",".join(
        part.split(";")[0].strip() for part in timing.split(",")
    )
    return response.status_code, body, headers


def _both(clients: dict[str, TestClient], method: str, **kwargs: object):
    fast = clients["fast"].request(method, "/v1/rank", **kwargs)
    route = clients["route"].request(method, "/v1/rank", **kwargs)
    assert _answer(fast) == _answer(route)
    return fast


def test_the_default_serves_rank_ahead_of_the_router(both: dict[str, TestClient]) -> None:
    assert Settings.model_fields["fast_path"].default is True
    assert _uses_fast_path(both["fast"]) and not _uses_fast_path(both["route"])


def test_rankings_are_the_routes(
    both: dict[str, TestClient], redis_client: redis.Redis, tiny_cfg: LLaTTEConfig
) -> None:
    write_embedding(redis_client, "u1", [0.5] * tiny_cfg.d_upstream)
    write_history(redis_client, "u1", make_history(12, tiny_cfg.content_dim))
    write_content(redis_client, "c1", [0.25] * tiny_cfg.content_dim)
    plain = rank_body(4, tiny_cfg)
    by_id = copy.deepcopy(plain)
    by_id["candidates"][0].pop("content_embedding")
    by_id["candidates"][0]["content_id"] = "c1"
    by_id["candidates"][1].pop("content_embedding")
    by_id["candidates"][1]["content_id"] = "not-stored"
    for body in (plain, by_id, rank_body(1, tiny_cfg, user_id="nobody")):
        answer = _both(both, "POST", json=body)
        assert answer.status_code == 200
        assert answer.headers["server-timing"].startswith("redis;dur=")
        assert len(answer.json()["candidates"]) == len(body["candidates"])
    degraded = _both(both, "POST", json=by_id).json()["degraded"]
    assert {"feature": "content", "reason": "missing", "count": 1} in degraded


@pytest.mark.parametrize(
    "case",
    ["not-json", "empty", "validation", "too-many-candidates", "bad-content-id", "oversized"],
)
def test_errors_are_the_routes(
    both: dict[str, TestClient], redis_client: redis.Redis, tiny_cfg: LLaTTEConfig, case: str
) -> None:
    body = rank_body(2, tiny_cfg)
    if case == "not-json":
        kwargs = {"content": b'{"user_id": "u1", "candidates": [', "headers": _JSON}
    elif case == "empty":
        kwargs = {"content": b"", "headers": _JSON}
    elif case == "validation":
        body["candidates"][0]["bid"] = -1.0
        kwargs = {"json": body}
    elif case == "too-many-candidates":
        body["candidates"] = body["candidates"] * 30
        kwargs = {"json": body}
    elif case == "bad-content-id":
        body["candidates"][0]["content_id"] = "tab\there"
        kwargs = {"json": body}
    else:
        kwargs = {"content": b"x" * (65 * 1024), "headers": _JSON}
    answer = _both(both, "POST", **kwargs)
    assert answer.status_code == (413 if case == "oversized" else 422)
    assert answer.json()["detail"]


def test_other_methods_fall_through_to_the_router(both: dict[str, TestClient]) -> None:
    assert _both(both, "GET").status_code == 405
    assert _both(both, "PUT", json={}).status_code == 405


def test_no_model_is_the_routes_503(
    both: dict[str, TestClient], tiny_cfg: LLaTTEConfig, monkeypatch
) -> None:
    for client in both.values():
        monkeypatch.setattr(client.app.state.ranker.runner, "bundle", None)
    answer = _both(both, "POST", json=rank_body(2, tiny_cfg))
    assert answer.status_code == 503
    assert answer.json() == {"detail": "model not loaded yet"}


def test_a_failing_ranking_is_a_500_and_counted(
    both: dict[str, TestClient], tiny_cfg: LLaTTEConfig, monkeypatch
) -> None:
    async def broken(*args: object, **kwargs: object) -> dict:
        raise RuntimeError("scoring failed")

    before = {
        name: metric_value(
            c.get("/metrics").text,
            "ranker_request_duration_seconds_count",
            {"outcome": "server_error"},
        )
        for name, c in both.items()
    }
    for client in both.values():
        monkeypatch.setattr(client.app.state.ranker.ranking, "rank", broken)
    answer = _both(both, "POST", json=rank_body(2, tiny_cfg))
    assert answer.status_code == 500
    for name, client in both.items():
        after = metric_value(
            client.get("/metrics").text,
            "ranker_request_duration_seconds_count",
            {"outcome": "server_error"},
        )
        assert after == before[name] + 1


def test_behind_a_path_prefix_it_still_answers(
    redis_server: RedisServer, checkpoint_dir: Path, tiny_cfg: LLaTTEConfig, monkeypatch
) -> None:
    """A proxy that mounts the ranker under a prefix sets root_path; the fast path answers
    there too (a broken route under the fast path shows it was not the router)."""
    app = create_app(ranker_settings(redis_server.url, checkpoint_dir))
    with TestClient(app, root_path="/ranker", raise_server_exceptions=False) as client:

        async def no_router(scope: object, receive: object, send: object) -> None:
            raise AssertionError("served by the router")

        with monkeypatch.context() as patch:  # undone before the lifespan's shutdown
            patch.setattr(app.router, "middleware_stack", no_router)
            answer = client.post("/ranker/v1/rank", json=rank_body(2, tiny_cfg))
            assert client.get("/ranker/healthz").status_code == 500  # the router, broken
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["candidates"]) == 2


def _receiving(*messages: dict):
    queue = list(messages)

    async def receive() -> dict:
        return queue.pop(0)

    return receive


def test_a_body_sent_in_chunks_is_read_whole_and_a_disconnect_is_none() -> None:
    chunks = _receiving(
        {"type": "http.request", "body": b'{"a":', "more_body": True},
        {"type": "http.request", "more_body": True},  # an ASGI message may leave body out
        {"type": "http.request", "body": b" 1}"},  # more_body left out: the last
    )
    assert asyncio.run(fast_rank._read_body(chunks)) == b'{"a": 1}'
    gone = _receiving({"type": "http.request", "body": b"{", "more_body": True},
                      {"type": "http.disconnect"})  # fmt: skip
    assert asyncio.run(fast_rank._read_body(gone)) is None


@pytest.mark.parametrize(
    ("path", "root", "route"),
    [
        ("/v1/rank", None, "/v1/rank"),  # no root_path in the scope
        ("/v1/rank", "", "/v1/rank"),
        ("/ranker/v1/rank", "/ranker", "/v1/rank"),
        ("/rankerv1/rank", "/ranker", "/rankerv1/rank"),  # not at a segment boundary
        ("/other/v1/rank", "/ranker", "/other/v1/rank"),  # another prefix of the same length
    ],
)
def test_the_route_path_drops_only_the_scopes_root_path(path, root, route) -> None:
    scope = {"path": path} if root is None else {"path": path, "root_path": root}
    assert fast_rank._route_path(scope) == route


def test_an_exception_handler_gets_the_request_as_from_the_route(
    redis_server: RedisServer, checkpoint_dir: Path, tiny_cfg: LLaTTEConfig
) -> None:
    async def echo(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"method": request.method, "path": request.url.path}, 422)

    for fast in (True, False):
        app = create_app(ranker_settings(redis_server.url, checkpoint_dir, fast_path=fast))
        app.add_exception_handler(RequestValidationError, echo)
        with TestClient(app) as client:
            too_long = rank_body(2, tiny_cfg, user_id="u" * 10_000)
            answer = client.post("/v1/rank", json=too_long)
        assert answer.status_code == 422, (fast, answer.text)
        assert answer.json() == {"method": "POST", "path": "/v1/rank"}


def test_the_fast_path_sends_lower_case_headers_and_its_length(
    redis_server: RedisServer, checkpoint_dir: Path, tiny_cfg: LLaTTEConfig
) -> None:
    """ASGI header names are lower case; uvicorn frames a response by a header named exactly
    content-length (without it: chunked)."""
    app = create_app(ranker_settings(redis_server.url, checkpoint_dir))
    body = json.dumps(rank_body(3, tiny_cfg, user_id="asgi-user")).encode()
    sent: list[dict] = []

    async def call() -> None:
        async def send(message: dict) -> None:
            sent.append(message)

        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": "/v1/rank", "raw_path": b"/v1/rank",
            "root_path": "", "query_string": b"", "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
            "headers": [(b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode())],
        }  # fmt: skip
        await app(scope, _receiving({"type": "http.request", "body": body}), send)

    with TestClient(app) as client:
        assert _uses_fast_path(client)
        client.portal.call(call)
    start, payload = sent
    assert start["status"] == 200
    assert [name for name, _ in start["headers"]] == [
        b"content-length", b"content-type", b"server-timing"
    ]  # fmt: skip
    headers = dict(start["headers"])
    assert headers[b"content-length"] == str(len(payload["body"])).encode()
    assert headers[b"content-type"] == b"application/json"
    assert b"model;dur=" in headers[b"server-timing"]
