"""Startup and shutdown: Redis client, inference thread, checkpoint load + warm-up."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from ranker_service.metrics import Metrics
from ranker_service.model_runner import ModelRunner
from ranker_service.ranking import RankingService
from ranker_service.settings import Settings
from ranker_service.state import AppState
from ranker_service.store import FeatureStore
from shared_model.process import freeze_long_lived_objects

log = logging.getLogger(__name__)


def make_lifespan(settings: Settings, metrics: Metrics):
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        metrics.thread_cpu.loop_thread = threading.get_ident()  # the loop serves from here
        store = FeatureStore(settings)
        runner = ModelRunner(settings)
        app.state.ranker = AppState(
            settings, metrics, store, runner, RankingService(settings, store, runner, metrics)
        )
        try:
            # A checkpoint that does not load fails startup: better no server than a wrong one.
            bundle = await runner.start()
            metrics.set_model(
                bundle.model_version, bundle.upstream_model_version or "", bundle.precision
            )
            log.info("%d startup objects frozen out of the cyclic GC", freeze_long_lived_objects())
            yield
        finally:
            runner.shutdown()
            await store.aclose()
            log.info("ranker stopped")

    return lifespan
