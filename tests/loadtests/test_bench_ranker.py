"""The ranker benchmark's quick mode end to end: real redis-server, both rankers, the LitServe
peer; the result JSON carries the headline lines (no figure is asserted: this is no benchmark).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from loadtests.bench.common import read_result
from loadtests.bench.ranker import OpenLoopRun, sustained_rate

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
    extra = (
        "bf16 saturation: ",
        "bf16 batched saturation gain: ",
        "int8: non-model share ",
        "int8 saturation: ",
        "int8 batched saturation gain: ",
        "highest Poisson rate with P99 < 50 ms, int8: ",
        "recorded graphs vs eager: ",
        "fast path vs the FastAPI route: ",
        "non-model share under Poisson load: ",
        "highest Poisson rate with P99 < 50 ms on an ideal queue, float32 ",
        "highest Poisson rate with P99 < 50 ms on an ideal queue, int8 ",
        "highest Poisson rate with P99 < 50 ms on an ideal queue, bf16 ",
    )
    for prefix in (*HEADLINES, *extra):
        assert any(line.startswith(prefix) for line in doc["summary"]), (prefix, doc["summary"])
    assert doc["machine"]["cpu"] and "flags" in doc["machine"]
    titles = [t["title"] for t in doc["tables"]]
    assert any(t.startswith("Server CPU per request") for t in titles)
    assert any(t.endswith("FastAPI route)") for t in titles)
    (loaded,) = [t for t in doc["tables"] if t["title"].startswith("Server CPU per request under")]
    assert [row[0] for row in loaded["rows"]] == [2.0, 5.0]  # every quick-mode rate
    assert all(row[1] > row[2] > 0 and row[5] >= 1 for row in loaded["rows"])
    assert any("LitServe peer" in t for t in titles)
    servers = [
        row[0] for t in doc["tables"] if t["title"].startswith("Saturation") for row in t["rows"]
    ]
    assert servers == [
        "one at a time",
        "micro-batched",
        "micro-batched, eager",
        "micro-batched, 1 thread",  # the ranker's default runs 2
        "one at a time, bf16",
        "micro-batched, bf16",
        "one at a time, int8",
        "micro-batched, int8",
    ]
    (poisson,) = [t for t in doc["tables"] if t["title"].startswith("Poisson arrivals")]
    assert {"bf16 p99 ms", "int8 p99 ms"} <= set(poisson["columns"])
    assert set(doc["data"]["poisson"]) == {"ours", "ours_eager", "ours_bf16", "ours_int8", "peer"}
    (ideal,) = [t for t in doc["tables"] if t["title"].startswith("An ideal queue")]
    assert ideal["columns"][:3] == ["req/s", "float32 measured", "float32 ideal, server time"]
    assert [row[0] for row in ideal["rows"]] == [2.0, 5.0]
    lone = doc["data"]["lone_request_ms"]
    assert set(lone) == {"float32", "bf16", "int8"}
    for times in lone.values():  # one request in flight: the model call is within the server's
        assert all(0 < m <= s <= w for w, s, m in zip(*times.values(), strict=True))
    # The same arrivals and draws: each request's server time holds its model call, so the
    # queue on server times answers no sooner, rank by rank, than the one on model calls.
    assert all(row[2] >= row[-1] > 0 for row in ideal["rows"])
    assert run.stdout.rstrip().splitlines()[-1].startswith("wrote ")


def _run(p99_ms: float, failures: int = 0) -> OpenLoopRun:
    return OpenLoopRun([p99_ms * 0.5] * 98 + [p99_ms] * 2, failures, 0.1)  # nearest rank


def test_the_sustained_rate_is_the_last_one_before_the_first_miss() -> None:
    assert sustained_rate({2: _run(20), 5: _run(40), 10: _run(49)}) == 10
    # a lucky higher rate after a miss does not count
    assert sustained_rate({2: _run(20), 5: _run(60), 10: _run(30)}) == 2
    assert sustained_rate({10: _run(30), 2: _run(20), 5: _run(50)}) == 2  # 50 ms is a miss
    assert sustained_rate({2: _run(20), 5: _run(30, failures=1)}) == 2
    assert sustained_rate({2: _run(70), 5: _run(20)}) is None


def test_a_round_is_long_enough_to_expect_the_requests_its_p99_needs() -> None:
    from loadtests.bench.ranker import round_seconds

    assert round_seconds(2.0, 30.0, 200) == 100.0  # 60 requests in 30 s: too few
    assert round_seconds(20.0, 30.0, 200) == 30.0  # 600 in the round as set
    assert round_seconds(5.0, 30.0, 0) == 30.0


def test_a_round_s_cpu_is_per_answered_request_and_its_batches_per_model_call() -> None:
    from loadtests.bench.ranker import round_cpu

    before = (10.0, {"stages": {"score": 4.0}, "batches": {"sum": 30.0, "count": 20.0}})
    after = (13.0, {"stages": {"score": 6.7}, "batches": {"sum": 130.0, "count": 60.0}})
    cpu = round_cpu(before, after, answered=100)
    assert cpu is not None
    assert cpu.total_s == pytest.approx(0.03) and cpu.score_s == pytest.approx(0.027)
    assert cpu.per_call == pytest.approx(2.5)  # 100 requests in 40 model calls
    assert round_cpu(before, after, answered=0) is None
    # a server that never scored (no batch series yet) reports no batches, not a division error
    empty = (10.0, {"stages": {}, "batches": {}})
    assert round_cpu(empty, empty, answered=1).per_call == 0.0


def test_process_cpu_reads_another_process_clock_to_the_nanosecond(monkeypatch) -> None:
    """The server's CPU comes from its CPU-time clock, not /proc's 10 ms ticks: for a process
    that has stopped computing, both agree within a tick, and the clock has sub-tick digits."""
    from loadtests.bench import ranker

    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\nx = sum(range(3_000_000))\nprint(1, flush=True)\nsys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout.readline() == b"1\n"  # done computing; now blocked on stdin
        clock = ranker.process_cpu_s(child.pid)
        ticks = sum(int(x) for x in ranker._proc_stat(child.pid)[11:15]) / ranker._CLK
        assert clock > 0 and abs(clock - ticks) <= 2 / ranker._CLK
        assert round(clock * ranker._CLK) != clock * ranker._CLK  # not a whole number of ticks
        assert ranker.process_cpu_s(child.pid) == clock  # blocked: the clock stands still

        def unreadable(clock_id: int) -> float:
            raise OSError("no such clock")

        monkeypatch.setattr(ranker.time, "clock_gettime", unreadable)
        assert ranker.process_cpu_s(child.pid) == ticks
    finally:
        child.kill()
        child.wait()


def test_the_cpu_outside_the_stages_is_split_by_the_thread_it_ran_on() -> None:
    from loadtests.bench.ranker import other_cpu

    stages = {"redis": 0.5, "features": 0.75, "score": 20.0, "respond": 0.25}
    threads = {"event_loop": 1.75, "inference": 21.0, "other": 0.0}
    split = dict(other_cpu(23.0, stages, threads))
    assert split == {
        "other, event loop": 1.0,  # 1.75 - (0.5 + 0.25)
        "other, inference threads": 0.25,  # 21.0 - (0.75 + 20.0)
        "other, elsewhere": 0.25,  # 23.0 - 21.5 stages - 1.25
    }
    assert sum(split.values()) == 23.0 - sum(stages.values())
    assert other_cpu(23.0, stages, {}) == [("other", 1.5)]  # a server without thread CPU


def test_an_ideal_queue_holds_the_slo_up_to_the_first_rate_that_misses() -> None:
    from loadtests.bench.ranker import highest_held, ideal_line, ideal_p99

    fast, slow = [10.0] * 199 + [30.0], [40.0] * 99 + [60.0]
    assert ideal_p99(fast, 0.01, 2) == pytest.approx(10.0)  # at a trickle: the lone times
    by_rate = {r: ideal_p99(slow, r, 2) for r in (2.0, 20.0, 40.0)}
    assert by_rate[2.0] < by_rate[20.0] < by_rate[40.0]
    assert highest_held({2.0: 49.9, 5.0: 51.0, 10.0: 40.0}) == 2.0  # no lucky higher rate
    line = ideal_line("int8", {2.0: 30.0, 5.0: 60.0}, {2.0: 20.0, 5.0: 40.0}, 2)
    assert line.endswith("int8 (2 threads, this run's lone-request server times): 2 req/s; "
                         "model calls alone: 5 req/s")  # fmt: skip
    assert ideal_line("float32", {2.0: 55.0}, None, 2).endswith(": none of [2.0]")
