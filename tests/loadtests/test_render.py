"""The one benchmark pipeline: a result written by bench.common renders into its page."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtests.bench.common import Result, cpu_family_model, machine_line, read_result
from loadtests.reports.render import render

MACHINE = {
    "cpu": "Test CPU 9000",
    "flags": ["avx2", "fma"],
    "cores_usable": 2,
    "cores_total": 4,
    "load_average": [0.5, 0.4, 0.3],
    "torch": "2.13.0",
    "torch_threads": 2,
}


def _fixture(results: Path) -> Path:
    result = Result(
        benchmark="toy",
        title="Toy benchmark",
        command="python -m loadtests.bench.toy --n 3",
        description="Counts to three.",
        machine=MACHINE,
    )
    table = result.table("Counting", ["n", "ms"], note="lower is better")
    table.add(1, 12.345)
    table.add(2, 0.5)
    result.summary.append("counted to three in 12.3 ms")
    result.data["plots"] = [
        {"file": "toy.png", "title": "t", "x": [1, 2], "series": {"ms": [12.345, 0.5]}}
    ]
    return result.write(results / "toy.json")


def test_a_result_renders_into_its_page_and_the_index(tmp_path: Path) -> None:
    results, docs = tmp_path / "results", tmp_path / "docs"
    _fixture(results)
    (docs / "benchmarks").mkdir(parents=True)
    (docs / "benchmarks" / "legacy.md").write_text("# Legacy page\n\ntext\n")

    render(results, docs)

    page = (docs / "benchmarks" / "toy.md").read_text()
    assert page.splitlines()[1] == "# Toy benchmark"
    assert "Reproduce: `python -m loadtests.bench.toy --n 3`" in page
    assert "Test CPU 9000 [avx2,fma], 2 cores usable" in page and "torch 2.13.0" in page
    assert "| n | ms |" in page and "| 1 | 12.3 |" in page and "| 2 | 0.50 |" in page
    assert "lower is better" in page and "- counted to three in 12.3 ms" in page
    index = (docs / "benchmarks.md").read_text()
    assert "[Toy benchmark](benchmarks/toy.md)" in index
    assert "- counted to three in 12.3 ms" in index
    assert "[Legacy page](benchmarks/legacy.md)" in index
    pytest.importorskip("matplotlib")
    assert (docs / "benchmarks" / "toy.png").stat().st_size > 0
    assert "![toy.png](toy.png)" in page


def test_read_result_rejects_a_bad_schema(tmp_path: Path) -> None:
    good = json.loads(_fixture(tmp_path).read_text())
    wrong_version = tmp_path / "v0.json"
    wrong_version.write_text(json.dumps({**good, "schema": 0}))
    with pytest.raises(ValueError, match="schema"):
        read_result(wrong_version)
    no_command = tmp_path / "nocmd.json"
    no_command.write_text(json.dumps({k: v for k, v in good.items() if k != "command"}))
    with pytest.raises(ValueError, match="command"):
        read_result(no_command)
    with pytest.raises(ValueError, match=r"nocmd\.json|v0\.json"):
        render(tmp_path, tmp_path / "docs")  # the renderer reads through read_result


def test_a_pipe_inside_a_header_or_cell_does_not_split_the_column() -> None:
    from loadtests.bench.common import markdown_table

    lines = markdown_table(["variant", "max |diff|"], [["a|b", 0.5]]).splitlines()
    # an escaped pipe is not a column separator: every line has the same 3 separators
    assert [line.replace("\\|", "").count("|") for line in lines] == [3, 3, 3]
    assert lines[0] == "| variant | max \\|diff\\| |" and lines[2] == "| a\\|b | 0.50 |"


ZEN5 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 26
model\t\t: 2
model name\t: AMD EPYC
stepping\t: 1

processor\t: 1
cpu family\t: 25
model\t\t: 17
"""


def test_the_cpu_generation_is_read_from_the_first_processor_and_shown_in_the_machine_line():
    assert cpu_family_model(ZEN5) == "family 26, model 2"
    assert cpu_family_model("processor\t: 0\nCPU implementer\t: 0x41\n") is None  # arm64
    assert machine_line({**MACHINE, "cpu_family_model": "family 26, model 2"}).startswith(
        "Test CPU 9000 (family 26, model 2) [avx2,fma], 2 cores usable"
    )
    assert machine_line(MACHINE).startswith("Test CPU 9000 [avx2,fma]")  # results before it
