"""``POST /v1/rank`` served ahead of the router: the same handler without the router's layers.

Through FastAPI a request passes its exception middleware, exit-stack middleware, router,
route, request/response wrapper and dependency solver before the handler runs, and each
layer is Python that runs cold after every model step (the step evicts the interpreter's
working set from the caches). ``FastRank`` sits inside the ranker's own middleware (metrics,
body-size limit), answers ``POST /v1/rank`` itself and hands every other request on.

It is the route, not a second implementation: it calls the same body parser
(``parse_rank_request``), readiness check (``ready_ranking``), ranking service and response
writer (``rank_answer``), and answers the route's exceptions with the handlers the app
registered for them, so the status, body and headers are the route's. ``RANKER_FAST_PATH=false``
serves through the route (the reference); tests/ranker_service/test_fast_path.py holds the
two equal.
"""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from ranker_service.deps import ready_ranking
from ranker_service.routes.rank import parse_rank_request, rank_answer

PATH = "/v1/rank"


class FastRank:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _route_path(scope) != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            body = await _read_body(receive)
            if body is None:  # the client went away
                return
            ranking = ready_ranking(scope["app"].state.ranker)
            request = parse_rank_request(body)
            payload, timing = rank_answer(await ranking.rank(request, started=started))
        except Exception as exc:
            handler = _handler_for(scope["app"].exception_handlers, exc)
            if handler is None:
                raise  # a 500, as from the route (ServerErrorMiddleware)
            response = await handler(Request(scope, receive), exc)
            await response(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", str(len(payload)).encode()),
                    (b"content-type", b"application/json"),
                    (b"server-timing", timing.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def _route_path(scope: Scope) -> str:
    """The path the router matches: ``path`` less the ``root_path`` a proxy prefix adds."""
    path, root = scope["path"], scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] == "/":
        return path[len(root) :]
    return path


async def _read_body(receive: Receive) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _handler_for(handlers: dict, exc: Exception):
    """The handler the router's exception middleware would pick for ``exc``: the nearest class
    in its MRO with one. Status-code keys and Exception/500 (the 500 page) are not its."""
    for cls in type(exc).__mro__:
        if cls is not Exception and cls in handlers:
            return handlers[cls]
    return None
