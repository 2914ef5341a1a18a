"""The lookup A/B's quick mode end to end: real redis-server and two rankers; the result JSON
carries both variants and the headline lines (no figure is asserted: this is no benchmark)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from loadtests.bench.common import read_result


@pytest.mark.slow
def test_quick_mode_compares_lookup_on_and_off(tmp_path: Path) -> None:
    out = tmp_path / "lookup.json"
    run = subprocess.run(
        [sys.executable, "-m", "loadtests.bench.lookup", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    doc = read_result(out)
    assert doc["benchmark"] == "lookup"
    rows = {row[0]: row for row in doc["tables"][0]["rows"]}
    # The A/B is real: "on" ranks with the stored embedding, "off" without looking it up.
    assert rows["lookup on"][1] == "hit" and rows["lookup off"][1] == "disabled"
    assert all(row[2] > 0 and row[3] == 0 for row in rows.values())
    assert any(line.startswith("P99 ratio lookup on / off: ") for line in doc["summary"])
    assert len(doc["data"]["pair_ratios"]) == doc["data"]["rounds"]
