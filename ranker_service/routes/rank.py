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
async def rank(request: RankRequest, ranking: RankingDep, response: Response) -> RankResponse:
    """Score every candidate for the user and return them sorted by ranking score.

    Ranking score = pCTR * pCVR, times ``bid`` for candidates that carry one. The upstream
    embedding is used only when found, intact, fresh and written by the upstream model the
    ranker was trained with; otherwise the response says why (``upstream.outcome``).
    """
    result = await ranking.rank(request, started=time.perf_counter())
    t = result.timing
    response.headers["Server-Timing"] = (
        f"redis;dur={t.redis_ms:.2f}, model;dur={t.model_ms:.2f}, total;dur={t.total_ms:.2f}"
    )
    return result
