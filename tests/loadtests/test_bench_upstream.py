"""The upstream benchmark's quick mode runs end to end and writes its result JSON."""

from __future__ import annotations

from pathlib import Path

from loadtests.bench import upstream
from loadtests.bench.common import read_result


def test_quick_mode_writes_the_result_lines(tmp_path: Path, capsys) -> None:
    out = tmp_path / "upstream.json"
    assert upstream.main(["--quick", "--batch", "6", "--min-seconds", "0", "--out", str(out)]) == 0
    result = read_result(out)
    assert result["benchmark"] == "upstream"
    (table,) = result["tables"]
    assert [row[0] for row in table["rows"]] == ["padded to T", "length-aware"]
    assert all(len(row) == len(table["columns"]) for row in table["rows"])
    heads = [line.split(":")[0] for line in result["summary"]]
    assert heads[:2] == ["length-aware speedup", "real-token floor ratio"]
    assert len(result["data"]["lengths"]) == 6
    assert "length-aware speedup:" in capsys.readouterr().out
