"""The capacity rule: highest passing rate, a lone miss tolerated, two in a row end the scan."""

from __future__ import annotations

from loadtests.locust.capacity import capacity


def _steps(kind: str, p99s: dict[float, float], failures: dict[float, int] | None = None):
    failures = failures or {}
    return [
        {"rate": r, "arrival": kind, "summary": {"p99_ms": p, "failures": failures.get(r, 0)}}
        for r, p in p99s.items()
    ]


def test_capacity_rule() -> None:
    steps = _steps("poisson", {1: 30, 2: 60, 3: 40, 4: 70, 6: 80, 8: 45})
    assert capacity(steps, "poisson", 50) == 3  # 2 is a lone miss; 4 and 6 end the scan
    assert capacity(steps, "constant", 50) is None  # no steps of that kind
    assert capacity(_steps("constant", {1: 90, 2: 95, 3: 10}), "constant", 50) is None
    assert capacity(_steps("constant", {1: 10, 2: 10}, {2: 1}), "constant", 50) == 1  # errors
