"""The headless runner: summary from Locust's CSV, SLO evaluation and exit status."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from loadtests.locust import run
from loadtests.locust.run import Summary, duration_seconds, evaluate_slo, summarize

HEADER = [
    "Type", "Name", "Request Count", "Failure Count", "Median Response Time",
    "Average Response Time", "Min Response Time", "Max Response Time", "Average Content Size",
    "Requests/s", "Failures/s", "50%", "66%", "75%", "80%", "90%", "95%", "98%", "99%",
    "99.9%", "99.99%", "100%",
]  # fmt: skip


def _summary(p99: float = 40.0, failures: int = 0, requests: int = 1000) -> Summary:
    return Summary(requests, failures, failures / requests, 10, 30, p99, 90, 20.0)


def test_stats_csv_summary(tmp_path: Path) -> None:
    path = tmp_path / "locust_stats.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        w.writerow(["POST", "/v1/rank", 200, 2, 12, 14, 3, 95, 900, 9.5, 0.1,
                    12, 13, 14, 15, 20, 30, 40, 55, 95, 95, 95])  # fmt: skip
        w.writerow(["KAFKA", "kafka user-events", 50, 0, 2, 2, 1, 5, 100, 2.5, 0,
                    2, 2, 2, 2, 3, 4, 5, 5, 5, 5, 5])  # fmt: skip
        w.writerow(["", "Aggregated", 250, 2] + ["N/A"] * 18)
    s = summarize(path)
    assert s is not None
    assert (s.requests, s.failures, s.p50_ms, s.p95_ms, s.p99_ms) == (200, 2, 12, 30, 55)
    assert s.error_rate == pytest.approx(0.01)
    assert s.throughput_rps == 9.5 and s.events_sent == 50


def test_slo_evaluation() -> None:
    assert evaluate_slo(_summary()) == []  # no bounds given
    assert evaluate_slo(_summary(p99=40), p99_ms=50, error_rate=0.01) == []
    assert evaluate_slo(_summary(p99=50), p99_ms=50) == []  # the bound itself passes
    assert len(evaluate_slo(_summary(p99=51), p99_ms=50)) == 1
    assert len(evaluate_slo(_summary(failures=20), error_rate=0.01)) == 1
    assert len(evaluate_slo(_summary(p99=80, failures=20), p99_ms=50, error_rate=0.01)) == 2
    assert evaluate_slo(_summary(p99=math.nan), p99_ms=50)  # no samples: not a pass


@pytest.mark.parametrize(("p99", "failures", "expected"), [(40, 0, 0), (60, 0, 1), (40, 50, 1)])
def test_exit_status(monkeypatch, tmp_path: Path, p99, failures, expected) -> None:
    monkeypatch.setattr(run, "run_locust", lambda *a: _summary(p99=p99, failures=failures))
    argv = ["--run-dir", str(tmp_path), "--slo-p99-ms", "50", "--slo-error-rate", "0.01"]
    assert run.main(argv) == expected
    assert (tmp_path / "summary.json").is_file()


def test_no_statistics_is_exit_2(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(run, "run_locust", lambda *a: None)
    assert run.main(["--run-dir", str(tmp_path)]) == 2


def test_durations() -> None:
    assert duration_seconds("90") == 90 and duration_seconds("2m") == 120
    assert duration_seconds("1h30m") == 5400 and duration_seconds("45s") == 45
    with pytest.raises(ValueError):
        duration_seconds("soon")
