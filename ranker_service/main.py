"""Builds the app: ``uvicorn ranker_service.main:app``. The model loads in the lifespan."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ranker_service.lifespan import make_lifespan
from ranker_service.metrics import Metrics
from ranker_service.middleware import BodySizeLimit, RankMetrics
from ranker_service.ranking import RankInputError
from ranker_service.routes import admin, health, metrics, rank
from ranker_service.settings import Settings, get_settings


async def _rank_input_error(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    # FastAPI's default handler echoes each offending input back, and a NaN or Infinity there
    # makes the error response itself fail to encode (a 500). Send where and what, not the input.
    assert isinstance(exc, RequestValidationError)
    detail = []
    for e in exc.errors():
        msg = e.get("msg", "invalid")
        if isinstance(reason := (e.get("ctx") or {}).get("error"), str):
            msg = f"{msg}: {reason}"  # e.g. where the JSON is malformed
        loc = [str(part) for part in e.get("loc", ())]
        detail.append({"loc": loc, "msg": msg, "type": e.get("type", "value_error")})
    message = "; ".join(f"{'.'.join(d['loc'])}: {d['msg']}" for d in detail)
    return JSONResponse(
        {"detail": detail, "message": message},
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    registry = Metrics()
    app = FastAPI(
        title="LLaTTE ranker",
        summary="Ranks candidate ads with the compact online LLaTTE + DHEN model.",
        lifespan=make_lifespan(settings, registry),
    )
    app.include_router(rank.router)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(admin.router)
    app.add_exception_handler(RankInputError, _rank_input_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    # Outermost last: metrics see every /v1/rank response, 413s included.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RankMetrics, metrics=registry)
    return app


app = create_app()
