"""POST /admin/reload: swap in a new checkpoint without dropping requests.

Off unless ``RANKER_RELOAD_TOKEN`` is set (404), then it needs ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, status
from pydantic import BaseModel, ConfigDict

from ranker_service.deps import MetricsDep, RunnerDep, SettingsDep
from ranker_service.errors import error_responses
from shared_model.checkpoint import CheckpointError

log = logging.getLogger(__name__)
router = APIRouter(prefix="/admin", tags=["admin"])


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    checkpoint_path: str | None = None  # default: the serving checkpoint's directory


class ReloadResponse(BaseModel):
    model_version: str
    previous_model_version: str | None
    upstream_model_version: str | None
    checkpoint_path: str


@router.post("/reload", response_model=ReloadResponse, responses=error_responses(401, 404, 422))
async def reload(
    settings: SettingsDep,
    runner: RunnerDep,
    metrics: MetricsDep,
    body: ReloadRequest | None = None,
    authorization: Annotated[str | None, Header()] = None,
) -> ReloadResponse:
    token = settings.reload_token
    if token is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "reload is disabled (no reload token set)")
    expected = f"Bearer {token.get_secret_value()}"
    if authorization is None or not secrets.compare_digest(authorization, expected):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or wrong reload token")
    previous = runner.bundle.model_version if runner.bundle else None
    path = Path(body.checkpoint_path) if body and body.checkpoint_path else None
    try:
        bundle = await runner.reload(path)
    except CheckpointError as e:
        metrics.model_reloads.labels("failed").inc()
        log.error("reload failed, still serving %s: %s", previous, e)
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(e)) from None
    metrics.model_reloads.labels("ok").inc()
    metrics.set_model(bundle.model_version, bundle.upstream_model_version or "", bundle.precision)
    return ReloadResponse(
        model_version=bundle.model_version,
        previous_model_version=previous,
        upstream_model_version=bundle.upstream_model_version,
        checkpoint_path=str(bundle.path),
    )
