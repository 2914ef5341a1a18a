"""HTTP request and response models for ``POST /v1/rank``.

Strict at the edge: unknown fields, wrong types and NaN/Infinity are rejected with a 422 that
names the field. Limits that depend on the settings or on the loaded model (candidate count,
inline events, content width, float features) are checked by the route, also with a 422.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ranker_service.examples import RANK_REQUEST_EXAMPLE, RANK_RESPONSE_EXAMPLE
from shared_model.contract import MAX_ID_LENGTH, MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS

# Printable, no braces (they would break the Redis Cluster hash tag of the user's keys).
Id = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_ID_LENGTH, pattern=r"^[^{}\x00-\x1f\x7f]+$"),
]
TimestampMs = Annotated[int, Field(ge=MIN_TIMESTAMP_MS, lt=MAX_TIMESTAMP_MS)]


class _Strict(BaseModel):
    # strict: "1.5" is not a float and true is not a number; NaN and Infinity are refused.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class RequestContext(_Strict):
    surface: Id = Field(description="Where the ads are shown: feed, reels, search, ...")
    device: Id = Field(description="Device type: ios, android, web, ...")
    time_ms: TimestampMs | None = Field(
        default=None, description="Request time, epoch ms (default: the server's clock)."
    )


class Candidate(_Strict):
    ad_id: Id
    advertiser_id: Id
    content_embedding: list[float] | None = Field(
        default=None, description="Dense content vector; width must be the model's content_dim."
    )
    content_id: Id | None = Field(
        default=None,
        description="Look the content vector up in Redis (contract.content_embedding_key) "
        "instead of sending it; ignored when content_embedding is given.",
    )
    floats: list[float] | None = Field(
        default=None, description="Float features; exactly the model's n_candidate_floats."
    )
    bid: float | None = Field(
        default=None, ge=0, description="Optional bid; the ranking score is multiplied by it."
    )


class InlineEvent(_Strict):
    """One recent user event sent by a caller that holds the history itself."""

    timestamp_ms: TimestampMs
    action_type: str | int = Field(description="click, conversion, view, impression, tag or 1..5")
    item_id: Id
    surface: Id = "feed"
    event_id: Id | None = None
    content_embedding: list[float] | None = None
    value: float | None = None


class RankRequest(_Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [RANK_REQUEST_EXAMPLE]})

    user_id: Id
    context: RequestContext
    candidates: list[Candidate] = Field(min_length=1)
    events: list[InlineEvent] | None = Field(
        default=None,
        description="The user's recent events, oldest first or in any order. When given, the "
        "stored history is not read (the upstream embedding still is).",
    )


class UpstreamStatus(StrEnum):
    USED = "used"
    ABSENT = "absent"


class EmbeddingOutcome(StrEnum):
    """Why the upstream embedding was or was not used (also the metric label)."""

    HIT = "hit"
    MISSING = "missing"  # no record (never written, or expired by its TTL)
    STALE = "stale"  # older than embedding_max_age_s
    VERSION_MISMATCH = "version_mismatch"  # written by an upstream model we were not trained with
    TIMEOUT = "timeout"  # Redis did not answer within the budget
    UNAVAILABLE = "unavailable"  # Redis refused or dropped the connection
    CORRUPT = "corrupt"  # the record does not decode (ContractError)
    DISABLED = "disabled"  # lookup switched off by settings


class UpstreamInfo(BaseModel):
    status: UpstreamStatus
    outcome: EmbeddingOutcome
    age_ms: int | None = Field(description="Request time - the record's computed_at_ms.")
    model_version: str | None = Field(description="The upstream model that wrote the record.")


class ScoredCandidate(BaseModel):
    ad_id: str
    p_ctr: float
    p_cvr: float
    score: float = Field(description="p_ctr * p_cvr, times bid when the candidate has one.")


class Timing(BaseModel):
    redis_ms: float
    model_ms: float
    total_ms: float


class HistorySource(StrEnum):
    REDIS = "redis"  # the stored history
    INLINE = "inline"  # the request's events
    NONE = "none"  # Redis unavailable: ranked without a history


class DegradedFeature(StrEnum):
    HISTORY = "history"  # the stored history
    EMBEDDING = "embedding"  # the upstream user embedding
    CONTENT = "content"  # candidate content vectors looked up by content_id


class DegradationReason(StrEnum):
    """Why a feature was not used (also the ``reason`` label of ranker_degraded_requests)."""

    REDIS_TIMEOUT = "redis_timeout"  # Redis did not answer within the budget
    REDIS_UNAVAILABLE = "redis_unavailable"  # Redis refused or dropped the connection
    CORRUPT_RECORD = "corrupt_record"  # records that do not decode (skipped)
    VERSION_MISMATCH = "version_mismatch"  # an embedding from another upstream model
    STALE = "stale"  # an embedding older than embedding_max_age_s
    MISSING = "missing"  # nothing stored (new user, expired, never written)


class Degradation(BaseModel):
    feature: DegradedFeature
    reason: DegradationReason
    count: int = Field(
        default=1,
        description="How many records (history) or candidates (content) it concerns; 1 for "
        "the embedding.",
    )


class RankResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [RANK_RESPONSE_EXAMPLE]})

    model_version: str
    candidates: list[ScoredCandidate] = Field(description="Sorted by score, best first.")
    upstream: UpstreamInfo
    history_source: HistorySource = Field(description="Where the history came from.")
    history_length: int
    degraded: list[Degradation] = Field(
        default_factory=list,
        description="Features this ranking went without, and why; empty when it had all.",
    )
    timing: Timing
