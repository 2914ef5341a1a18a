"""The upstream benchmark runs end to end in both modes and writes its result JSON."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from loadtests.bench import upstream
from loadtests.bench.common import REPO_ROOT, read_result


def test_quick_length_mixes_write_the_result_lines(tmp_path: Path, capsys) -> None:
    out = tmp_path / "upstream.json"
    argv = ["--quick", "--batch", "6", "--min-seconds", "0", "--world-days", "0.5"]
    assert upstream.main([*argv, "--out", str(out)]) == 0
    result = read_result(out)
    assert result["benchmark"] == "upstream"
    heavy, world = result["tables"]
    assert heavy["title"].startswith("log-uniform") and world["title"].startswith("synthetic world")
    for table in (heavy, world):
        assert [row[0] for row in table["rows"]] == ["padded to T", "length-aware"]
        assert all(len(row) == len(table["columns"]) for row in table["rows"])
    heads = [line.split(":")[0] for line in result["summary"]]
    assert heads[:3] == [
        "length-aware speedup",
        "real-token floor ratio",
        world["title"].split(":")[0],
    ]
    assert len(result["data"][heavy["title"].split(":")[0]]["lengths"]) == 6
    assert "length-aware speedup:" in capsys.readouterr().out


# The GPU host has torch and numpy only: the sweep must import nothing else of ours that
# needs safetensors, pydantic, Redis, Kafka or the web stack.
_WITHOUT_SERVICE_DEPS = """
import sys
for name in ("safetensors", "pydantic", "pydantic_settings", "redis", "kafka", "fastapi",
             "uvicorn", "prometheus_client", "matplotlib"):
    sys.modules[name] = None  # import fails
from loadtests.bench import upstream
sys.exit(upstream.main(sys.argv[1:]))
"""


def test_batch_sweep_runs_with_torch_and_numpy_only(tmp_path: Path) -> None:
    """The GPU command's code path, on the CPU at a toy size, with service deps unimportable."""
    out = tmp_path / "sweep.json"
    argv = ["--quick", "--dtype", "bf16", "--batch-sizes", "1,2", "--history-length", "16"]
    subprocess.run(
        [
            sys.executable,
            "-c",
            _WITHOUT_SERVICE_DEPS,
            *argv,
            "--min-seconds",
            "0",
            "--out",
            str(out),
        ],
        cwd=REPO_ROOT,
        check=True,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
    )
    result = read_result(out)
    assert result["benchmark"] == "upstream-cpu-sweep"
    (table,) = result["tables"]
    assert [row[0] for row in table["rows"]] == [1, 2]
    assert result["summary"][0].startswith("best MFU: ")
    assert "relative error" in result["summary"][1] and result["data"]["relative_error"] < 5e-2
    assert result["data"]["flops_per_user"] > 0
