"""The one error body of every 4xx (and the 503 before the model is loaded), and its handlers.

    {"detail": "candidates.0.bid: Input should be greater than or equal to 0",
     "errors": [{"loc": ["body", "candidates", 0, "bid"], "msg": "...", "type": "..."}]}

``detail`` is always a sentence a person can read; ``errors`` is present for request
validation errors only, one entry per offending field (where and what, never the input itself:
a NaN echoed back would make the error response fail to encode).
"""

from __future__ import annotations

from typing import Any

from fastapi import Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="Where: body, then the path to the field.")
    msg: str = Field(description="What is wrong with it.")
    type: str = Field(description="A stable error code (pydantic's), e.g. missing.")


class ErrorResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"detail": "too many candidates: 120 > max_candidates=100"},
                {
                    "detail": "body.user_id: Field required",
                    "errors": [{"loc": ["body", "user_id"], "msg": "Field required",
                                "type": "missing"}],
                },
            ]
        }
    )  # fmt: skip

    detail: str = Field(description="What is wrong, in one sentence.")
    errors: list[FieldError] | None = Field(
        default=None, description="Request validation errors, one per field (422 only)."
    )


def error_body(detail: str, errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The JSON of an ``ErrorResponse`` (``errors`` left out when there are none)."""
    return ErrorResponse(detail=detail, errors=errors).model_dump(exclude_none=True)


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each status code documented with the error model."""
    descriptions = {
        400: "Bad request",
        401: "Missing or wrong bearer token",
        403: "Forbidden",
        404: "Not found (or the operation is disabled)",
        413: "Body over max_body_bytes",
        422: "Invalid request; detail names the field and the problem",
        503: "Model not loaded yet",
    }
    return {c: {"model": ErrorResponse, "description": descriptions[c]} for c in codes}


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = []
    for e in exc.errors():
        msg = e.get("msg", "invalid")
        if isinstance(reason := (e.get("ctx") or {}).get("error"), str):
            msg = f"{msg}: {reason}"  # e.g. where the JSON is malformed
        loc = [part if isinstance(part, int) else str(part) for part in e.get("loc", ())]
        errors.append({"loc": loc, "msg": msg, "type": e.get("type", "value_error")})
    detail = "; ".join(f"{'.'.join(map(str, d['loc']))}: {d['msg']}" for d in errors)
    return JSONResponse(
        error_body(detail or "invalid request", errors),
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse(
        error_body(str(exc.detail)), status_code=exc.status_code, headers=exc.headers
    )


async def rank_input_error(request: Request, exc: Exception) -> JSONResponse:
    """A limit that depends on settings or the model (candidate count, widths): a 422."""
    return JSONResponse(error_body(str(exc)), status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)
