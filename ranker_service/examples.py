"""Request and response examples for the OpenAPI document (a test validates them)."""

from __future__ import annotations

from typing import Any

RANK_REQUEST_EXAMPLE: dict[str, Any] = {
    "user_id": "user-42",
    "context": {"surface": "feed", "device": "ios", "time_ms": 1_750_000_000_000},
    "candidates": [
        {"ad_id": "ad-1", "advertiser_id": "advertiser-7", "bid": 1.5},
        {"ad_id": "ad-2", "advertiser_id": "advertiser-3", "content_id": "creative-9"},
    ],
}

RANK_RESPONSE_EXAMPLE: dict[str, Any] = {
    "model_version": "online-3f2a9c1d7e0b",
    "candidates": [
        {"ad_id": "ad-1", "p_ctr": 0.031, "p_cvr": 0.12, "score": 0.00558},
        {"ad_id": "ad-2", "p_ctr": 0.027, "p_cvr": 0.09, "score": 0.00243},
    ],
    "upstream": {
        "status": "used",
        "outcome": "hit",
        "age_ms": 95_000,
        "model_version": "upstream-8c41d09a2b6e",
    },
    "history_source": "redis",
    "history_length": 212,
    # Two candidates' content ids were not in Redis: they were scored without content.
    "degraded": [{"feature": "content", "reason": "missing", "count": 2}],
    "timing": {"redis_ms": 0.41, "model_ms": 3.2, "total_ms": 3.9},
}
