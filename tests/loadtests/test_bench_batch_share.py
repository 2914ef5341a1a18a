"""The batch-sharing benchmark's quick mode end to end: real redis-server, both rankers; the
result JSON carries all three policies at every rate and the headline lines (no figure is
asserted: this is no benchmark)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from loadtests.bench.common import read_result


@pytest.mark.slow
def test_quick_mode_measures_every_policy_at_every_rate(tmp_path: Path) -> None:
    out = tmp_path / "share.json"
    run = subprocess.run(
        [sys.executable, "-m", "loadtests.bench.batch_share", "--quick", "--tag", "ci",
         "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    doc = read_result(out)
    assert doc["benchmark"] == "batch-share-ci"
    assert doc["machine"]["cpu"] and "flags" in doc["machine"]
    poisson, saturation = doc["tables"]
    policies = ["share", "greedy", "alone"]
    assert [(row[0], row[1]) for row in poisson["rows"]] == [
        (rate, name) for rate in (5.0, 10.0) for name in policies
    ]
    assert all(row[4] > 0 and row[6] >= 1 for row in poisson["rows"])  # p99, mean batch
    # the ranker that does not micro-batch scores one request per model call
    assert [row[6] for row in poisson["rows"] if row[1] == "alone"] == [1.0, 1.0]
    assert [row[0] for row in saturation["rows"]] == policies
    assert all(row[2] > 0 for row in saturation["rows"])
    for prefix in (
        "P99, greedy / share: 5 req/s ",
        "P99, alone / share: 5 req/s ",
        "saturation, share / greedy: ",
        "saturation, share / alone: ",
    ):
        assert any(line.startswith(prefix) for line in doc["summary"]), (prefix, doc["summary"])
    assert sorted(doc["data"]["latencies_ms"]) == sorted(
        f"{name} {rate}" for name in policies for rate in (5, 10)
    )
