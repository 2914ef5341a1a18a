"""POST /v1/rank."""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from ranker_service.deps import RankingDep
from ranker_service.errors import error_responses
from ranker_service.request_decoder import RankInput, decode_fast
from ranker_service.schemas import RankRequest, RankResponse

router = APIRouter(prefix="/v1", tags=["rank"])

# The body is declared here rather than as a parameter: FastAPI would parse it with the stdlib
# json module and then validate the Python objects (~3x the CPU of pydantic-core reading the
# bytes once). main.py adds RankRequest to the document's components.
REQUEST_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RankRequest"}}},
}


def parse_rank_request(body: bytes) -> RankInput:
    """The request body -> its request: msgspec's structs when that decoder accepts it
    (ranker_service.request_decoder), else the reference, ``validate_rank_request``."""
    if (request := decode_fast(body)) is not None:
        return request
    return validate_rank_request(body)


def validate_rank_request(body: bytes) -> RankRequest:
    """The request body -> RankRequest, in one pass of pydantic-core over the bytes.

    Raises RequestValidationError with FastAPI's error shape (``loc`` starts with "body";
    malformed JSON is a "JSON decode error"), so the 422 body is the one every 4xx uses.
    """
    try:
        return RankRequest.model_validate_json(body)
    except ValidationError as e:
        raise RequestValidationError([_as_body_error(x) for x in e.errors()]) from None


def _as_body_error(error: Any) -> dict[str, Any]:
    out = {k: error[k] for k in ("type", "msg", "ctx") if k in error}
    out["loc"] = ("body", *error["loc"])
    if error["type"] == "json_invalid":
        out["msg"] = "JSON decode error"
    return out


def rank_answer(result: dict[str, Any]) -> tuple[bytes, str]:
    """A ranking result -> (the response body, its Server-Timing header). Serialised once, by
    orjson: returning a model would have FastAPI validate it again against response_model
    (which stays, for the OpenAPI schema)."""
    t = result["timing"]
    return orjson.dumps(result), (
        f"redis;dur={t['redis_ms']:.2f}, model;dur={t['model_ms']:.2f}, "
        f"total;dur={t['total_ms']:.2f}"
    )


@router.post(
    "/rank",
    response_model=RankResponse,
    responses=error_responses(413, 422, 503),
    openapi_extra={"requestBody": REQUEST_BODY},
)
async def rank(http_request: Request, ranking: RankingDep) -> Response:
    """Score every candidate for the user and return them sorted by ranking score.

    The body is a ``RankRequest``. Ranking score = pCTR * pCVR, times ``bid`` for candidates
    that carry one. The upstream embedding is used only when found, intact, fresh and written
    by the upstream model the ranker was trained with; otherwise the response says why
    (``upstream.outcome``), and ``degraded`` lists every feature the ranking went without,
    with the reason.
    """
    started = time.perf_counter()
    request = parse_rank_request(await http_request.body())
    body, timing = rank_answer(await ranking.rank(request, started=started))
    return Response(body, media_type="application/json", headers={"Server-Timing": timing})
