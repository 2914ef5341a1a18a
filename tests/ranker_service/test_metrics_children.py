"""Metrics.child: the labelled series the serving path records, looked up once."""

from __future__ import annotations

from ranker_service.metrics import Metrics


def test_child_is_the_labelled_series_and_is_kept() -> None:
    m = Metrics()
    hit = m.child(m.content_cache_lookups, "hit")
    assert hit is m.content_cache_lookups.labels("hit")
    assert m.child(m.content_cache_lookups, "hit") is hit
    assert m.child(m.content_cache_lookups, "miss") is not hit
    hit.inc(3)
    m.child(m.degraded_requests, "history", "missing").inc()
    assert m.registry.get_sample_value("ranker_content_cache_lookups_total", {"result": "hit"}) == 3
    assert (
        m.registry.get_sample_value(
            "ranker_degraded_requests_total", {"feature": "history", "reason": "missing"}
        )
        == 1
    )


def test_children_are_per_registry() -> None:
    a, b = Metrics(), Metrics()
    a.child(a.stage_cpu_seconds, "score").inc(1.5)
    b.child(b.stage_cpu_seconds, "score").inc(0.25)
    assert a.registry.get_sample_value("ranker_stage_cpu_seconds_total", {"stage": "score"}) == 1.5
    assert b.registry.get_sample_value("ranker_stage_cpu_seconds_total", {"stage": "score"}) == 0.25
