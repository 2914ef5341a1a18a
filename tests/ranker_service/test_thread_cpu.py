"""ranker_thread_cpu_seconds_total: each thread's CPU clock, by role, never going back."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

from fastapi.testclient import TestClient

from loadtests.stack.polling import wait_for
from loadtests.stack.servers import RedisServer
from ranker_service.main import create_app
from ranker_service.thread_cpu import ThreadCpu, thread_cpu_s
from tests.ranker_service.helpers import rank_body, ranker_settings


@contextlib.contextmanager
def _spinning(name: str) -> Iterator[tuple[threading.Thread, float]]:
    """A thread named ``name`` that did some work and now blocks, with the CPU it recorded
    for itself; it ends when the block exits (its clock gone by then)."""
    spent: list[float] = []
    recorded, release = threading.Event(), threading.Event()

    def run() -> None:
        sum(range(2_000_000))
        spent.append(thread_cpu_s(threading.get_native_id()))
        recorded.set()
        release.wait(30)

    thread = threading.Thread(target=run, name=name)
    thread.start()
    try:
        assert recorded.wait(30), "the thread never ran"
        yield thread, spent[0]
    finally:
        release.set()
        thread.join(30)
    # Python's side is done; the OS thread exits just after
    wait_for(lambda: thread_cpu_s(thread.native_id) is None, timeout=10, what="its clock gone")


def test_threads_are_counted_by_role_and_an_exited_thread_stays_counted() -> None:
    cpu = ThreadCpu(inference_prefix="spin-")
    before = cpu.seconds()
    with _spinning("spin-0") as (_, spent):
        live = cpu.seconds()
    gone = cpu.seconds()
    assert spent > 0
    assert live["inference"] - before["inference"] >= spent
    assert gone["inference"] >= live["inference"]  # its CPU stays after it exits
    assert set(live) == {"event_loop", "inference", "other"}
    assert all(gone[role] >= live[role] >= before[role] for role in live)


def test_threads_that_exit_one_after_another_all_stay_counted() -> None:
    cpu = ThreadCpu(inference_prefix="spin-")
    before = cpu.seconds()["inference"]
    spent = []
    for k in range(2):
        with _spinning(f"spin-{k}") as (_, seconds):
            cpu.seconds()  # read while it lives
            spent.append(seconds)
        cpu.seconds()  # read after it has gone
    assert cpu.seconds()["inference"] - before >= sum(spent)


def test_threads_of_one_role_add_up() -> None:
    cpu = ThreadCpu(inference_prefix="spin-")
    with _spinning("spin-0") as (_, first), _spinning("spin-1") as (_, second):
        live = cpu.seconds()["inference"]
    assert live >= first + second


def test_the_loop_thread_is_the_event_loop_and_other_threads_are_other() -> None:
    cpu = ThreadCpu(inference_prefix="spin-")
    with _spinning("worker-0") as (thread, spent):  # not an inference name
        unnamed = cpu.seconds()
        cpu.loop_thread = thread.ident
        named = cpu.seconds()
        now = thread_cpu_s(thread.native_id)  # the thread's clock after both reads
    assert unnamed["event_loop"] == 0.0 and unnamed["inference"] == 0.0
    assert unnamed["other"] >= spent  # the thread, among the others
    assert spent <= named["event_loop"] <= now  # the thread alone is the loop now


def test_a_thread_not_yet_running_is_skipped(monkeypatch) -> None:
    """A thread in ``threading.enumerate()`` before it runs has no kernel id yet: it is
    passed over, and the threads after it are still counted."""
    starting = threading.Thread(target=lambda: None, name="spin-starting")  # never started
    with _spinning("spin-0") as (thread, spent):
        monkeypatch.setattr(
            "ranker_service.thread_cpu.threading.enumerate", lambda: [starting, thread]
        )
        seconds = ThreadCpu(inference_prefix="spin-").seconds()
    assert starting.native_id is None and seconds["inference"] >= spent


def test_a_thread_that_has_exited_has_no_clock() -> None:
    with _spinning("spin-0") as (thread, _):
        assert thread_cpu_s(thread.native_id) is not None
    assert thread_cpu_s(thread.native_id) is None


def _sample(text: str, name: str, labels: str) -> float:
    prefix = f"{name}{{{labels}}} "
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, f"{prefix!r} not in /metrics once"
    return float(lines[0].rsplit(" ", 1)[1])


def test_the_service_reports_at_least_the_cpu_of_its_stages(
    redis_server: RedisServer, checkpoint_dir: Path, tiny_cfg
) -> None:
    """The stage counters are thread CPU of the loop (redis, respond) and of the inference
    threads (features, score): each role's clock holds at least its stages' sum."""
    settings = ranker_settings(redis_server.url, checkpoint_dir)
    with TestClient(create_app(settings)) as client:
        for i in range(5):
            body = rank_body(4, tiny_cfg, user_id=f"cpu-user-{i}")
            assert client.post("/v1/rank", json=body).status_code == 200
        text = client.get("/metrics").text

    def stage(name: str) -> float:
        return _sample(text, "ranker_stage_cpu_seconds_total", f'stage="{name}"')

    def thread(role: str) -> float:
        return _sample(text, "ranker_thread_cpu_seconds_total", f'thread="{role}"')

    assert stage("score") > 0 and stage("redis") > 0
    assert thread("inference") >= stage("features") + stage("score")
    assert thread("event_loop") >= stage("redis") + stage("respond")
