"""Arrival schedules: seeded, deterministic, with the requested mean rate."""

from __future__ import annotations

import itertools
import math
import statistics

import pytest

from loadtests.locust.arrivals import ArrivalSpec, Dispatcher, arrivals_until

RATE, SECONDS = 20.0, 500.0
EXPECTED = RATE * SECONDS  # 10,000 arrivals


@pytest.mark.parametrize("kind", ["constant", "poisson", "bursty"])
def test_mean_rate_and_determinism(kind: str) -> None:
    spec = ArrivalSpec(RATE, kind, seed=3)
    times = arrivals_until(spec, SECONDS)
    assert times == arrivals_until(ArrivalSpec(RATE, kind, seed=3), SECONDS)
    assert all(b >= a for a, b in itertools.pairwise(times))
    # A Poisson count has sd sqrt(10,000) = 100; 6 sd is generous yet catches a wrong rate.
    # The bursty count over 50 whole periods has a smaller spread than that.
    assert abs(len(times) - EXPECTED) <= 6 * math.sqrt(EXPECTED)


def test_interarrival_shapes() -> None:
    def cv(kind: str) -> float:
        t = arrivals_until(ArrivalSpec(RATE, kind, seed=5), SECONDS)
        gaps = [b - a for a, b in itertools.pairwise(t)]
        return statistics.pstdev(gaps) / statistics.fmean(gaps)

    assert cv("constant") < 1e-6
    assert 0.95 < cv("poisson") < 1.05  # exponential gaps: coefficient of variation 1
    assert cv("bursty") > 1.2  # over-dispersed


def test_bursty_rate_inside_and_outside_bursts() -> None:
    spec = ArrivalSpec(RATE, "bursty", seed=7, burst_factor=3.0, burst_share=0.2)
    times = arrivals_until(spec, SECONDS)
    burst_len = spec.burst_share * spec.burst_period_s
    in_burst = sum(t % spec.burst_period_s < burst_len for t in times)
    burst_rate = in_burst / (SECONDS * spec.burst_share)
    quiet_rate = (len(times) - in_burst) / (SECONDS * (1 - spec.burst_share))
    assert burst_rate == pytest.approx(3 * RATE, rel=0.1)
    assert quiet_rate == pytest.approx(spec.quiet_factor * RATE, rel=0.1)


def test_seeds_differ_and_bad_specs_fail() -> None:
    assert arrivals_until(ArrivalSpec(5, "poisson", 1), 10) != arrivals_until(
        ArrivalSpec(5, "poisson", 2), 10
    )
    with pytest.raises(ValueError):
        ArrivalSpec(0)
    with pytest.raises(ValueError):
        ArrivalSpec(1, "uniform")
    with pytest.raises(ValueError):
        ArrivalSpec(1, "bursty", burst_factor=6, burst_share=0.2)


def test_dispatcher_waits_until_due_and_counts_late_arrivals() -> None:
    d = Dispatcher(ArrivalSpec(10, "constant"), start=100.0)  # due at 100.0, 100.1, 100.2, ...
    assert d.wait(now=99.5) == pytest.approx(0.5)
    assert d.wait(now=100.0) == pytest.approx(0.1)
    assert d.wait(now=100.5) == 0.0  # due at 100.2: 300 ms late
    stats = d.stats()
    assert stats["dispatched"] == 3 and stats["late"] == 1
    assert stats["max_lag_ms"] == pytest.approx(300)
