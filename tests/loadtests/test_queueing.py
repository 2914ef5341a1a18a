"""The queue simulation against closed forms: Pollaczek-Khinchine (M/D/1), Erlang C (M/M/c)."""

from __future__ import annotations

import math
import random
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


def _erlang_c_response(rate: float, mean_service: float, servers: int) -> float:
    """Mean response time of an M/M/c queue: service + P(wait) / (c mu - lambda)."""
    a = rate * mean_service  # offered load
    rho = a / servers
    top = a**servers / math.factorial(servers) / (1 - rho)
    p_wait = top / (sum(a**k / math.factorial(k) for k in range(servers)) + top)
    return mean_service + p_wait / (servers / mean_service - rate)


@pytest.mark.parametrize(("rate", "servers"), [(30.0, 2), (55.0, 3)])
def test_drawn_service_times_on_several_servers_match_erlang_c(rate: float, servers: int) -> None:
    rng = random.Random(7)
    mean_service = 0.04
    samples = [rng.expovariate(1 / mean_service) for _ in range(50_000)]
    mean = statistics.fmean(simulate(rate, samples, requests=300_000, servers=servers))
    expected = _erlang_c_response(rate, statistics.fmean(samples), servers)
    assert mean == pytest.approx(expected, rel=0.03)


def test_no_response_is_shorter_than_the_service_and_the_tail_grows_with_load() -> None:
    light, heavy = simulate(2.0, 0.02, 50_000), simulate(30.0, 0.02, 50_000)
    assert light[0] == pytest.approx(0.02) and heavy[0] == pytest.approx(0.02)
    assert quantile(heavy, 0.99) > quantile(light, 0.99) > 0.02


def test_a_second_server_serves_the_same_arrivals_no_later() -> None:
    samples = [0.015, 0.02, 0.03, 0.06]
    one = simulate(20.0, samples, 20_000, seed=3)
    two = simulate(20.0, samples, 20_000, seed=3, servers=2)
    assert all(b <= a for a, b in zip(one, two, strict=True))  # sorted: rank by rank
    assert quantile(two, 0.99) < quantile(one, 0.99)


def test_at_a_trickle_the_tail_is_the_service_times_own() -> None:
    samples = [0.02] * 95 + [0.07] * 5  # 5% of lone requests take 70 ms
    r = simulate(0.1, samples, 50_000, servers=2)
    assert quantile(r, 0.5) == pytest.approx(0.02)
    assert quantile(r, 0.99) == pytest.approx(0.07)


def test_two_measured_times_are_both_drawn() -> None:
    r = simulate(0.1, [0.02, 0.07], 10_000, servers=2)
    assert r[0] == pytest.approx(0.02) and r[-1] == pytest.approx(0.07)
    assert 0.4 < sum(x > 0.05 for x in r) / len(r) < 0.6


def test_the_first_arrival_finds_every_server_free() -> None:
    assert simulate(50.0, 0.02, requests=1) == [pytest.approx(0.02)]
    assert simulate(50.0, [0.02, 0.02], requests=1, servers=3) == [pytest.approx(0.02)]


def test_a_seed_repeats_its_run_and_the_defaults_are_as_documented() -> None:
    samples = [0.01, 0.02, 0.05]
    assert simulate(20.0, samples, 2_000, seed=4) == simulate(20.0, samples, 2_000, seed=4)
    assert simulate(20.0, samples, 2_000) == simulate(20.0, samples, 2_000, seed=1)
    assert simulate(20.0, samples, 2_000, seed=4) != simulate(20.0, samples, 2_000, seed=5)
    assert len(simulate(5.0, 0.02)) == 200_000


def test_quantile_is_the_nearest_lower_rank_and_one_is_the_largest() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert [quantile(values, q) for q in (0.0, 0.5, 0.74, 0.75, 0.99, 1.0)] == [
        1.0, 3.0, 3.0, 4.0, 4.0, 4.0,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("rate", "service", "servers"),
    [(0.0, 0.02, 1), (5.0, 0.0, 1), (5.0, [], 1), (5.0, [0.02, -0.01], 1), (5.0, 0.02, 0)],
)
def test_bad_parameters_are_refused(rate, service, servers) -> None:
    expected = (
        f"servers must be at least 1, not {servers}"
        if servers < 1
        else "rate and service times must be positive"
    )
    with pytest.raises(ValueError, match=f"^{expected}$"):
        simulate(rate, service, servers=servers)
