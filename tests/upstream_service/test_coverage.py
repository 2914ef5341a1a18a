"""Embedding coverage gauges: users with a history vs users with an embedding of a version."""

from __future__ import annotations

from shared_model.contract import EmbeddingRecord, HistoryRecord, history_key
from tests.upstream_service.conftest import BASE_MS
from upstream_service.coverage import CoverageReporter
from upstream_service.embedding_store import EmbeddingStore
from upstream_service.metrics import WorkerMetrics


def _history(client, user: str) -> None:
    r = HistoryRecord(BASE_MS, 1, 11, 12, 13, 1.0, None)
    client.zadd(history_key(user, "eng"), {r.encode(): r.timestamp_ms})


def test_coverage_gauges_count_users_per_version(redis_client):
    for u in range(5):
        _history(redis_client, f"user-{u}")
    store = EmbeddingStore(redis_client)
    emb = lambda version: EmbeddingRecord((0.5,) * 4, version, BASE_MS, BASE_MS + 1, 1)  # noqa: E731
    store.write([(f"user-{u}", emb("A")) for u in range(4)])
    store.write([("user-0", emb("B")), ("user-1", emb("B"))])
    store.write([("no-history", emb("B"))])  # an embedding without a history is not coverage

    metrics = WorkerMetrics()
    found = CoverageReporter(redis_client, metrics, "B", 60).measure()
    assert found["users_with_history"] == 5
    assert metrics.value("upstream_users_with_history") == 5
    assert metrics.value("upstream_users_with_embedding", {"model_version": "B"}) == 2
    ratio = metrics.value("upstream_embedding_coverage_ratio", {"model_version": "B"})
    assert ratio == 2 / 5

    CoverageReporter(redis_client, metrics, "A", 60).measure()
    assert metrics.value("upstream_embedding_coverage_ratio", {"model_version": "A"}) == 4 / 5
    # Version B's gauge keeps its own value beside A's.
    assert metrics.value("upstream_embedding_coverage_ratio", {"model_version": "B"}) == 2 / 5


def test_backfill_outcomes_start_at_zero():
    metrics = WorkerMetrics()
    text = metrics.registry.get_sample_value(
        "upstream_backfill_requests_total", {"outcome": "other_version"}
    )
    assert text == 0.0
