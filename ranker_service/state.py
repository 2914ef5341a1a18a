"""What the lifespan builds and the routes use, kept on ``app.state.ranker``."""

from __future__ import annotations

from dataclasses import dataclass

from ranker_service.metrics import Metrics
from ranker_service.model_runner import ModelRunner
from ranker_service.ranking import RankingService
from ranker_service.settings import Settings
from ranker_service.store import FeatureStore


@dataclass
class AppState:
    settings: Settings
    metrics: Metrics
    store: FeatureStore
    runner: ModelRunner
    ranking: RankingService
