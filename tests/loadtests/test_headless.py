"""One short real headless Locust run against a ranker started here (about 15 s)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from loadtests.locust.run import build_parser, run_locust
from shared_model.config import tiny_config

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not installed"
)


def test_headless_run_writes_csv_and_summary(tmp_path: Path) -> None:
    from loadtests.locust.traffic import Population
    from loadtests.stack.local_ranker import LocalRanker

    cfg = tiny_config()
    population = Population(users=40, ads=50)
    args = build_parser().parse_args(
        ["--rate", "4", "--duration", "6s", "--arrival", "poisson", "--users", "8",
         "--population-users", "40", "--run-dir", str(tmp_path / "run")]
    )  # fmt: skip
    # The tiny model's widths: dense content and floats must match the loaded config.
    passthrough = [
        "--min-candidates", "5", "--max-candidates", "50", "--inline-share", "0.3",
        "--content-dim", str(cfg.content_dim), "--candidate-floats", str(cfg.n_candidate_floats),
    ]  # fmt: skip
    with LocalRanker(tmp_path / "ranker", population, config=cfg) as ranker:
        summary = run_locust(args, ranker.url, passthrough)
    run_dir = tmp_path / "run"
    for name in ("locust_stats.csv", "locust_stats_history.csv", "locust_failures.csv"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "report.html").is_file()
    assert summary is not None and summary.requests >= 10
    assert summary.failures == 0, (run_dir / "locust_failures.csv").read_text()
    outcomes = json.loads((run_dir / "extra_stats.json").read_text())["upstream_outcomes"]
    assert any(k.startswith("fresh user: hit") for k in outcomes), outcomes
