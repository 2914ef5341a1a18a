"""The capacity rule: highest passing rate, a lone miss tolerated, two in a row end the scan."""

from __future__ import annotations

from pathlib import Path

from loadtests.bench.common import Result
from loadtests.locust.capacity import capacity, p99_plot, steps_table
from loadtests.reports.render import render


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


def test_capacity_result_renders_its_table_and_plot(tmp_path: Path) -> None:
    """The command's output is a Result JSON; its page comes from the renderer alone."""
    steps = [
        {**s, "load_average": [1.5, 1.0, 0.5]}
        for s in _steps("constant", {4: 20, 8: 60}) + _steps("poisson", {4: 30})
    ]
    for s in steps:
        s["summary"].update(requests=40, p50_ms=10.0, p95_ms=15.0, throughput_rps=s["rate"],
                            late_share=0.0)  # fmt: skip
    result = Result(
        "capacity", "Ranker capacity", "python -m loadtests.locust.capacity --rates 4,8"
    )
    steps_table(result, steps, 50.0, "toy ranker")
    result.data["plots"] = [p99_plot("capacity", steps, 50.0)]
    result.write(tmp_path / "results" / "capacity.json")

    render(tmp_path / "results", tmp_path / "docs")

    page = (tmp_path / "docs" / "benchmarks" / "capacity.md").read_text()
    assert "Reproduce: `python -m loadtests.locust.capacity --rates 4,8`" in page
    assert "| 4 | constant | 40 | 0 |" in page and "| 8 | constant |" in page
    assert page.count("| yes |") == 2 and page.count("| no |") == 1
    plot = result.data["plots"][0]
    assert plot["x"] == [4, 8]
    assert plot["series"]["poisson arrivals"] == [30, None]  # no step at 8/s: a gap
