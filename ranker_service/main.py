"""Builds the app: ``uvicorn ranker_service.main:app``. The model loads in the lifespan."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from ranker_service.errors import http_error, rank_input_error, validation_error
from ranker_service.fast_rank import FastRank
from ranker_service.lifespan import make_lifespan
from ranker_service.metrics import Metrics
from ranker_service.middleware import BodySizeLimit, RankMetrics
from ranker_service.ranking import RankInputError
from ranker_service.routes import admin, health, metrics, rank
from ranker_service.schemas import RankRequest
from ranker_service.settings import Settings, get_settings


def _operation_id(route: APIRoute) -> str:
    """OpenAPI operation ids are the handler names: rank, readyz, reload, ..."""
    return route.name


def _declare_rank_request(app: FastAPI) -> None:
    """Put RankRequest (and the models it nests) into the OpenAPI components: the rank route
    reads its body itself (routes/rank.py) and only refers to the schema by name."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            doc = generate()  # caches itself in app.openapi_schema, which is completed here
            schemas = doc.setdefault("components", {}).setdefault("schemas", {})
            request = RankRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, schema in request.pop("$defs", {}).items():
                schemas.setdefault(name, schema)
            schemas["RankRequest"] = request
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    registry = Metrics()
    otel = settings.fastapi_telemetry
    app = FastAPI(
        title="LLaTTE ranker",
        summary="Ranks candidate ads with the compact online LLaTTE + DHEN model.",
        lifespan=make_lifespan(settings, registry),
        generate_unique_id_function=_operation_id,
        telemetry={"tracing": otel, "metrics": otel, "logs": otel},
    )
    app.include_router(rank.router)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(admin.router)
    _declare_rank_request(app)
    # One error body (ranker_service.errors.ErrorResponse) for every 4xx.
    app.add_exception_handler(RankInputError, rank_input_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    # Outermost last: metrics see every /v1/rank response, 413s included; the fast path runs
    # after both.
    if settings.fast_path:
        app.add_middleware(FastRank)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RankMetrics, metrics=registry)
    return app


app = create_app()
