"""``Annotated`` dependency aliases for the routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from ranker_service.metrics import Metrics
from ranker_service.model_runner import ModelRunner
from ranker_service.ranking import RankingService
from ranker_service.settings import Settings
from ranker_service.state import AppState


def get_state(request: Request) -> AppState:
    return request.app.state.ranker


StateDep = Annotated[AppState, Depends(get_state)]


def get_settings(state: StateDep) -> Settings:
    return state.settings


def get_metrics(state: StateDep) -> Metrics:
    return state.metrics


def get_runner(state: StateDep) -> ModelRunner:
    return state.runner


def get_ranking(state: StateDep) -> RankingService:
    if not state.runner.ready:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "model not loaded yet")
    return state.ranking


SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
RunnerDep = Annotated[ModelRunner, Depends(get_runner)]
RankingDep = Annotated[RankingService, Depends(get_ranking)]
