"""The ranker benchmark's quick mode end to end: real redis-server, both rankers, the LitServe
peer; the result JSON carries the headline lines (no figure is asserted: this is no benchmark).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from loadtests.bench.common import read_result

HEADLINES = (
    "non-model share: ",
    "model vs floor: ",
    "batched saturation gain: ",
    "highest Poisson rate with P99 < 50 ms: ",
    "ours / peer P99 at the rates the peer sustains: ",
)


@pytest.mark.slow
def test_quick_mode_writes_every_headline(tmp_path: Path) -> None:
    pytest.importorskip("litserve")
    out = tmp_path / "ranker.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "loadtests.bench.ranker",
            "--quick",
            "--bf16",
            "yes",
            "--tag",
            "ci",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    doc = read_result(out)
    assert doc["benchmark"] == "ranker-ci"
    for prefix in (*HEADLINES, "bf16 saturation: ", "bf16 batched saturation gain: "):
        assert any(line.startswith(prefix) for line in doc["summary"]), (prefix, doc["summary"])
    assert doc["machine"]["cpu"] and "flags" in doc["machine"]
    titles = [t["title"] for t in doc["tables"]]
    assert any(t.startswith("Server CPU per request") for t in titles)
    assert any("LitServe peer" in t for t in titles)
    servers = [
        row[0] for t in doc["tables"] if t["title"].startswith("Saturation") for row in t["rows"]
    ]
    assert servers == [
        "one at a time",
        "micro-batched",
        "one at a time, bf16",
        "micro-batched, bf16",
    ]
    assert run.stdout.rstrip().splitlines()[-1].startswith("wrote ")
