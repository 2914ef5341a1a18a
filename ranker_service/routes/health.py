"""GET /healthz (process alive) and GET /readyz (model warmed up and Redis reachable)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ranker_service.deps import StateDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "alive"}


@router.get("/readyz", responses={503: {"description": "Not ready; the body says why"}})
async def readyz(state: StateDep) -> JSONResponse:
    bundle = state.runner.bundle
    redis_ok = await state.store.ping()
    ready = bundle is not None and redis_ok
    body = {
        "ready": ready,
        "model_loaded": bundle is not None,
        "model_version": bundle.model_version if bundle else None,
        "redis_reachable": redis_ok,
    }
    return JSONResponse(body, status_code=200 if ready else 503)
