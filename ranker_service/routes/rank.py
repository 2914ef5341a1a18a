"""POST /v1/rank."""

from __future__ import annotations

import time

from fastapi import APIRouter, Response

from ranker_service.deps import RankingDep
from ranker_service.errors import error_responses
from ranker_service.schemas import RankRequest, RankResponse

router = APIRouter(prefix="/v1", tags=["rank"])


@router.post(
    "/rank",
    response_model=RankResponse,
    responses=error_responses(413, 422, 503),
)
async def rank(request: RankRequest, ranking: RankingDep) -> Response:
    """Score every candidate for the user and return them sorted by ranking score.

    Ranking score = pCTR * pCVR, times ``bid`` for candidates that carry one. The upstream
    embedding is used only when found, intact, fresh and written by the upstream model the
    ranker was trained with; otherwise the response says why (``upstream.outcome``), and
    ``degraded`` lists every feature the ranking went without, with the reason.
    """
    result = await ranking.rank(request, started=time.perf_counter())
    t = result.timing
    # Serialised once, by pydantic-core: returning the model would have FastAPI validate it
    # again against response_model (which stays, for the OpenAPI schema).
    return Response(
        result.model_dump_json(),
        media_type="application/json",
        headers={
            "Server-Timing": f"redis;dur={t.redis_ms:.2f}, model;dur={t.model_ms:.2f}, "
            f"total;dur={t.total_ms:.2f}"
        },
    )
