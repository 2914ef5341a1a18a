"""The ranker's own ASGI middleware, driven with raw ASGI messages around stub apps: the body-size
limit (a declared length, a streamed body, the exact limit, a client that goes away) and the
request metrics by outcome (what counts, what does not, the in-flight gauge)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import pytest
from starlette.types import Message, Receive, Scope, Send

from ranker_service import middleware as middleware_module
from ranker_service.metrics import Metrics
from ranker_service.middleware import BodySizeLimit, RankMetrics
from tests.clocks import StepClock

LIMIT = 100


def _scope(method: str = "POST", path: str = "/v1/rank", headers: Sequence = ()) -> Scope:
    return {"type": "http", "method": method, "path": path, "headers": list(headers)}


def _declared(size: int | str) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"application/json"), (b"content-length", str(size).encode())]


def _chunked() -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")]


class _Echo:
    """Reads the body to its end and answers ``status`` with it; records what it was given."""

    def __init__(self, status: int = 200) -> None:
        self.status, self.calls, self.messages = status, 0, []
        self.scope: Scope | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        self.scope = scope
        while True:
            message = await receive()
            self.messages.append(message)
            if not message.get("more_body", False):
                break
        body = b"".join(m.get("body", b"") for m in self.messages)
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": body})


def _serve(app, scope: Scope, chunks: Sequence[bytes], disconnect_after: int | None = None):
    """Run ``app`` on the body ``chunks``; -> (status, body) it sent, or None if it sent nothing.
    With ``disconnect_after``, the client goes away after that many chunks."""
    incoming: list[Message] = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    if disconnect_after is not None:
        incoming = [*incoming[:disconnect_after], {"type": "http.disconnect"}]
    answer = _exchange(app, scope, incoming)
    return None if answer is None else answer[:2]


def _exchange(app, scope: Scope, incoming: list[Message]):
    """Run ``app`` on these ASGI messages; -> (status, body, headers) or None."""
    incoming = list(incoming)
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    if not sent:
        return None
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return sent[0]["status"], body, dict(sent[0]["headers"])


def _limited(inner) -> BodySizeLimit:
    return BodySizeLimit(inner, max_bytes=LIMIT)


def _detail(body: bytes) -> str:
    return json.loads(body)["detail"]


def test_a_declared_length_over_the_limit_is_refused_unread() -> None:
    inner = _Echo()
    scope = _scope(headers=_declared(LIMIT + 1))
    status, body, headers = _exchange(
        _limited(inner), scope, [{"type": "http.request", "body": b"x" * 101}]
    )
    assert status == 413 and inner.calls == 0
    assert headers == {
        b"content-type": b"application/json",
        b"content-length": str(len(body)).encode(),
    }
    assert _detail(body) == f"request body is {LIMIT + 1} bytes; max_body_bytes={LIMIT}"


def test_a_declared_length_at_the_limit_passes_as_sent() -> None:
    inner = _Echo()
    chunks = [b"a" * 60, b"b" * 40]
    assert _serve(_limited(inner), _scope(headers=_declared(LIMIT)), chunks) == (
        200,
        b"a" * 60 + b"b" * 40,
    )
    assert [m["body"] for m in inner.messages] == chunks  # the app's own receive, untouched


@pytest.mark.parametrize(
    "headers",
    [_chunked(), [(b"content-type", b"application/json")], _declared("12x")],
    ids=["chunked", "no-length", "length-not-a-number"],
)
def test_a_streamed_body_up_to_the_limit_reaches_the_app_whole(headers: list) -> None:
    inner = _Echo()
    chunks = [b"a" * 30, b"b" * 30, b"c" * 40]  # exactly LIMIT bytes in three parts
    scope = _scope(headers=headers)
    assert _serve(_limited(inner), scope, chunks) == (200, b"".join(chunks))
    assert inner.messages == [
        {"type": "http.request", "body": b"".join(chunks), "more_body": False}
    ]
    assert inner.scope is scope


def test_a_streamed_message_may_leave_out_body_and_more_body() -> None:
    # ASGI: "body" defaults to b"" and "more_body" to False.
    inner = _Echo()
    incoming = [
        {"type": "http.request", "more_body": True},
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"cd"},
    ]
    status, body, _ = _exchange(_limited(inner), _scope(headers=_chunked()), incoming)
    assert (status, body) == (200, b"abcd")
    assert inner.messages == [{"type": "http.request", "body": b"abcd", "more_body": False}]


def test_a_declared_length_with_chunked_framing_is_counted_as_streamed() -> None:
    inner = _Echo()
    headers = [*_declared(10), (b"transfer-encoding", b"chunked")]
    status, body = _serve(_limited(inner), _scope(headers=headers), [b"x" * 60, b"y" * 60])
    assert status == 413 and inner.calls == 0
    assert _detail(body) == f"request body is more than {LIMIT} bytes; max_body_bytes={LIMIT}"


def test_a_streamed_body_over_the_limit_is_refused_at_the_chunk_that_crosses_it() -> None:
    inner = _Echo()
    status, body = _serve(_limited(inner), _scope(headers=_chunked()), [b"x" * 60, b"y" * 41])
    assert status == 413 and inner.calls == 0
    assert _detail(body) == f"request body is more than {LIMIT} bytes; max_body_bytes={LIMIT}"


def test_after_the_replayed_body_the_app_reads_the_connection_again() -> None:
    seen: list[Message] = []

    async def reads_twice(scope: Scope, receive: Receive, send: Send) -> None:
        seen.extend([await receive(), await receive()])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    assert _serve(_limited(reads_twice), _scope(headers=_chunked()), [b"ab", b"cd"]) == (204, b"")
    assert seen == [
        {"type": "http.request", "body": b"abcd", "more_body": False},
        {"type": "http.disconnect"},  # what the connection says next, not the body again
    ]


def test_a_client_gone_mid_body_gets_nothing_and_the_app_never_runs() -> None:
    inner = _Echo()
    assert _serve(_limited(inner), _scope(headers=_chunked()), [b"ab", b"cd", b"ef"], 1) is None
    assert inner.calls == 0


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_bodiless_methods_and_other_scopes_pass_straight_through(method: str) -> None:
    inner = _Echo()
    scope = _scope(method, "/metrics", _declared(10 * LIMIT))
    assert _serve(_limited(inner), scope, [b""]) == (200, b"")
    assert inner.calls == 1
    called: list[str] = []

    async def lifespan(scope: Scope, receive: Receive, send: Send) -> None:
        called.append(scope["type"])

    asyncio.run(_limited(lifespan)({"type": "lifespan"}, None, None))  # type: ignore[arg-type]
    assert called == ["lifespan"]


# --- RankMetrics ---------------------------------------------------------------------------


def _count(metrics: Metrics, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "ranker_request_duration_seconds_count", {"outcome": outcome}
    )
    return value or 0.0


def _counts(metrics: Metrics) -> dict[str, float]:
    return {o: _count(metrics, o) for o in ("ok", "client_error", "server_error")}


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(200, "ok"), (399, "ok"), (400, "client_error"), (499, "client_error"),
     (500, "server_error"), (503, "server_error")],
)  # fmt: skip
def test_each_answer_is_counted_once_under_its_outcome(status: int, outcome: str) -> None:
    metrics = Metrics()
    inner = _Echo(status)
    assert _serve(RankMetrics(inner, metrics), _scope(), [b"{}"]) == (status, b"{}")
    expected = dict.fromkeys(("ok", "client_error", "server_error"), 0.0)
    expected[outcome] = 1.0
    assert _counts(metrics) == expected
    total = metrics.registry.get_sample_value(
        "ranker_request_duration_seconds_sum", {"outcome": outcome}
    )
    assert total is not None and total > 0
    assert metrics.registry.get_sample_value("ranker_requests_in_flight") == 0


def test_the_latency_observed_is_the_time_the_request_took(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(middleware_module, "time", StepClock(0.25, 1000.0))
    metrics = Metrics()
    assert _serve(RankMetrics(_Echo(), metrics), _scope(), [b"{}"]) == (200, b"{}")
    total = metrics.registry.get_sample_value(
        "ranker_request_duration_seconds_sum", {"outcome": "ok"}
    )
    assert total == 0.25  # one reading before the app, one after


def test_an_app_that_raises_is_a_server_error_and_leaves_no_request_in_flight() -> None:
    metrics = Metrics()
    during: list[float | None] = []

    async def boom(scope: Scope, receive: Receive, send: Send) -> None:
        during.append(metrics.registry.get_sample_value("ranker_requests_in_flight"))
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        _serve(RankMetrics(boom, metrics), _scope(), [b"{}"])
    assert during == [1.0]
    assert _counts(metrics) == {"ok": 0.0, "client_error": 0.0, "server_error": 1.0}
    assert metrics.registry.get_sample_value("ranker_requests_in_flight") == 0


def test_only_rank_requests_are_counted() -> None:
    metrics = Metrics()
    during: list[float | None] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        during.append(metrics.registry.get_sample_value("ranker_requests_in_flight"))
        await _Echo()(scope, receive, send)

    assert _serve(RankMetrics(app, metrics), _scope("GET", "/metrics"), [b""]) == (200, b"")
    assert _serve(RankMetrics(app, metrics), _scope("POST", "/v1/rank/x"), [b""]) == (200, b"")
    assert during == [0.0, 0.0]
    assert _counts(metrics) == {"ok": 0.0, "client_error": 0.0, "server_error": 0.0}
