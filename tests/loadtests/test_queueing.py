"""The M/D/1 simulation against the Pollaczek-Khinchine mean wait and its limits."""

from __future__ import annotations

import statistics

import pytest

from loadtests.bench.queueing import quantile, simulate


@pytest.mark.parametrize("rate", [5.0, 20.0])
def test_mean_response_matches_pollaczek_khinchine(rate: float) -> None:
    d = 0.023
    rho = rate * d
    expected = d + rho * d / (2 * (1 - rho))  # service + mean wait of M/D/1
    mean = statistics.fmean(simulate(rate, d, requests=200_000))
    assert mean == pytest.approx(expected, rel=0.03)


def test_no_response_is_shorter_than_the_service_and_the_tail_grows_with_load() -> None:
    light, heavy = simulate(2.0, 0.02, 50_000), simulate(30.0, 0.02, 50_000)
    assert light[0] == pytest.approx(0.02) and heavy[0] == pytest.approx(0.02)
    assert quantile(heavy, 0.99) > quantile(light, 0.99) > 0.02


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        simulate(0.0, 0.02)
