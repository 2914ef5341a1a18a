"""``Annotated`` dependency aliases for the routes.

All ``async def``: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop and
two wakeups per request for a field lookup.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from ranker_service.metrics import Metrics
from ranker_service.model_runner import ModelRunner
from ranker_service.ranking import RankingService
from ranker_service.settings import Settings
from ranker_service.state import AppState


async def get_state(request: Request) -> AppState:
    return request.app.state.ranker


StateDep = Annotated[AppState, Depends(get_state)]


async def get_settings(state: StateDep) -> Settings:
    return state.settings


async def get_metrics(state: StateDep) -> Metrics:
    return state.metrics


async def get_runner(state: StateDep) -> ModelRunner:
    return state.runner


def ready_ranking(state: AppState) -> RankingService:
    """The ranking service, or a 503 while no model is loaded."""
    if not state.runner.ready:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "model not loaded yet")
    return state.ranking


async def get_ranking(state: StateDep) -> RankingService:
    return ready_ranking(state)


SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
RunnerDep = Annotated[ModelRunner, Depends(get_runner)]
RankingDep = Annotated[RankingService, Depends(get_ranking)]
