"""End to end: a real Prometheus scrapes a real local stack, and every dashboard query answers.

The stack (Tansu, redis-server, the upstream worker, the ranker;
``loadtests.stack.local_stack``) runs
tiny seeded checkpoints; the demo's traffic functions publish events through the real producer
and send ranking requests; then each panel query of each dashboard goes to Prometheus's HTTP
API and must return at least one series with a finite value. Also: the demo CLI, end to end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from loadtests.reports.dashboards import DASHBOARDS, panel_queries
from loadtests.stack.demo import (
    TrafficOptions,
    histogram_quantile,
    merged_scrape,
    publish_events,
    send_rank_requests,
    total,
    users_with_history,
    wait_for_worker,
)
from loadtests.stack.local_stack import LocalStack, StackOptions
from loadtests.stack.polling import wait_for
from loadtests.stack.servers import PROMETHEUS_INSTALL_HINT, PrometheusServer
from shared_model.checkpoint import load_checkpoint
from upstream_service.backfill import run_backfill
from upstream_service.settings import Settings as UpstreamSettings

ROOT = Path(__file__).resolve().parents[2]
TRAFFIC = TrafficOptions(events=1500, rate=1000, users=100, requests=60, candidates=20)
# Grafana's $__rate_interval, fixed: long enough to hold the whole test's traffic.
RATE_INTERVAL = "5m"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Tiny upstream + online checkpoints; the online one expects the upstream's version."""
    from loadtests.stack.checkpoints import checkpoint_pair

    pair = checkpoint_pair(tmp_path_factory.mktemp("stack-ckpt"))
    return pair.upstream, pair.online


def test_histogram_quantile_matches_prometheus_interpolation() -> None:
    samples = {
        "x_bucket": [
            ({"le": "0.1"}, 10.0),
            ({"le": "0.2"}, 30.0),
            ({"le": "+Inf"}, 40.0),
        ]
    }
    assert histogram_quantile(0.25, samples, "x") == pytest.approx(0.1)  # rank 10: edge
    assert histogram_quantile(0.5, samples, "x") == pytest.approx(0.15)  # rank 20: mid-bucket
    assert histogram_quantile(0.99, samples, "x") == pytest.approx(0.2)  # in +Inf: highest bound


@pytest.fixture(scope="module")
def driven_stack(
    checkpoints: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LocalStack, PrometheusServer]]:
    if shutil.which("prometheus") is None:
        pytest.skip(PROMETHEUS_INSTALL_HINT)
    run_dir = tmp_path_factory.mktemp("stack-run")
    options = StackOptions(
        run_dir=run_dir, upstream_checkpoint=checkpoints[0], online_checkpoint=checkpoints[1]
    )
    with LocalStack(options) as stack:
        prometheus = PrometheusServer(stack.scrape_targets()).start()
        try:
            wait_for(prometheus.targets_up, 30, "Prometheus to scrape every target", 0.5)
            publish_events(stack, TRAFFIC, progress=False)
            wait_for_worker(stack, TRAFFIC.events, timeout=120)
            # A backfill of the served upstream version (the rollout path), so the Backfill
            # panel has data: every user with a history gets a refresh request.
            version = load_checkpoint(checkpoints[0], stage="upstream").model_version
            settings = UpstreamSettings(
                kafka_bootstrap_servers=stack.kafka_bootstrap, redis_url=stack.redis_url
            )
            stats = run_backfill(settings, version, show_progress=False)
            assert stats.published > 0

            def backfill_written() -> bool:
                m = merged_scrape(stack.upstream_metrics_urls)
                return total(m, "upstream_backfill_lag_seconds_count") >= stats.published

            wait_for(backfill_written, 120, "the worker to write every backfilled user", 0.2)
            client = redis.Redis.from_url(stack.redis_url)
            try:
                users = users_with_history(client)
            finally:
                client.close()
            # Labelled series appear with their first request, so rate() over them needs the
            # traffic to span scrapes: a first half creates the series, a few scrapes later a
            # second half increases them (on a busy machine one burst can fit between scrapes).
            half = dataclasses.replace(TRAFFIC, requests=TRAFFIC.requests // 2)
            first = send_rank_requests(stack, half, users)
            scraped_all_requests(stack, prometheus)
            second = send_rank_requests(stack, half, users)
            for ranking in (first, second):
                assert ranking.errors == 0 and ranking.used_upstream > 0
            scraped_all_requests(stack, prometheus)
            yield stack, prometheus
        finally:
            prometheus.stop()


REQUESTS_SERIES = "ranker_request_duration_seconds_count"


def scraped_all_requests(stack: LocalStack, prometheus: PrometheusServer) -> None:
    """Poll until Prometheus holds a sample of the ranker's request count taken after every
    request so far (the ranker's own /metrics says how many there were)."""
    served = total(merged_scrape([f"{stack.ranker_url}/metrics"]), REQUESTS_SERIES)
    assert served > 0

    def scraped() -> bool:
        result = prometheus.query(f"sum({REQUESTS_SERIES})")
        return bool(result) and float(result[0]["value"][1]) >= served

    wait_for(scraped, 60, "Prometheus to scrape the ranker after the last request", 0.2)


def _dashboard_queries() -> list[tuple[str, str]]:
    return [
        (f"{name}: {where}", expr)
        for name, board in DASHBOARDS.items()
        for where, expr in panel_queries(board)
    ]


@pytest.mark.slow
def test_every_dashboard_query_returns_data(
    driven_stack: tuple[LocalStack, PrometheusServer],
) -> None:
    _, prometheus = driven_stack
    empty, all_nan = [], []
    for where, expr in _dashboard_queries():
        result = prometheus.query(expr.replace("$__rate_interval", RATE_INTERVAL))
        if not result:
            empty.append(f"{where}: {expr}")
        elif not any(math.isfinite(float(r["value"][1])) for r in result):
            all_nan.append(f"{where}: {expr} -> {result}")
    assert not empty, "queries without data:\n" + "\n".join(empty)
    assert not all_nan, "queries with only NaN:\n" + "\n".join(all_nan)


@pytest.mark.slow
def test_the_scrape_saw_the_traffic(driven_stack: tuple[LocalStack, PrometheusServer]) -> None:
    _, prometheus = driven_stack
    consumed = prometheus.query("sum(upstream_events_consumed_total)")
    assert float(consumed[0]["value"][1]) == TRAFFIC.events
    ranked = prometheus.query('sum(ranker_request_duration_seconds_count{outcome="ok"})')
    assert float(ranked[0]["value"][1]) >= TRAFFIC.requests
    hits = prometheus.query('sum(ranker_embedding_lookups_total{outcome="hit"})')
    assert float(hits[0]["value"][1]) > 0


@pytest.mark.slow
def test_demo_cli_end_to_end(checkpoints: tuple[Path, Path], tmp_path: Path) -> None:
    """``python -m loadtests.stack.demo`` prints its report and leaves no process behind."""
    argv = [
        sys.executable, "-m", "loadtests.stack.demo",
        "--upstream-checkpoint", str(checkpoints[0]),
        "--online-checkpoint", str(checkpoints[1]),
        "--events", "800", "--rate", "1000", "--users", "60", "--requests", "20",
        "--run-dir", str(tmp_path / "run"),
    ]  # fmt: skip
    result = subprocess.run(
        argv, cwd=ROOT, capture_output=True, text=True, timeout=240, start_new_session=True
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = result.stdout
    for line in ("embeddings written", "freshness", "ranking latency", "used the upstream"):
        assert line in report, report
    written = re.search(r"embeddings written +(\d+) \((\d+) users hold one", report)
    assert written and int(written[1]) > 0 and int(written[2]) > 0, report
    assert re.search(r"ranking requests +20 ok, 0 failed", report), report
    latency = re.search(r"ranking latency \(client\) +p50 ([\d.]+) ms, p99 ([\d.]+) ms", report)
    assert latency and 0 < float(latency[1]) <= float(latency[2]), report
    freshness = re.search(r"freshness \(event->Redis\) +p50 (\d+) ms, p99 (\d+) ms", report)
    assert freshness and 0 <= int(freshness[1]) <= int(freshness[2]), report
    assert '"status": "used"' in report, report
    logs = {p.name for p in (tmp_path / "run").iterdir()}
    assert logs >= {"ranker.log", "upstream-0.log", "redis.log", "tansu.log"}


@pytest.mark.slow
def test_demo_cli_cleans_up_on_sigterm(checkpoints: tuple[Path, Path], tmp_path: Path) -> None:
    argv = [
        sys.executable, "-m", "loadtests.stack.demo",
        "--upstream-checkpoint", str(checkpoints[0]),
        "--online-checkpoint", str(checkpoints[1]),
        "--events", "100000", "--rate", "200", "--run-dir", str(tmp_path / "run"),
    ]  # fmt: skip
    demo = subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        log = tmp_path / "run" / "ranker.log"
        while not (log.exists() and "Application startup complete" in log.read_text()):
            assert demo.poll() is None and time.monotonic() < deadline, "demo did not start"
            time.sleep(0.5)
        # The stack is up and the event producer is publishing: the last process it starts.
        wait_for(lambda: any(_runs(p, PRODUCER) for p in _descendants(demo.pid)), 60, "producer")
        children = _descendants(demo.pid)
        assert children, "the demo started no process"
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(60) == 130
        # Exited children of other parents are reaped by init: give that a moment, by polling.
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: not any(_alive(p) for p in children), 10, "children gone", 0.1)
        alive = [pid for pid in children if _alive(pid)]
        assert not alive, f"left running: {alive}"
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()


def _descendants(pid: int) -> list[int]:
    """Processes whose parent chain reaches pid (they may be in other process groups)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        children = [p for p, parent in parents.items() if parent == current]
        found += children
        frontier += children
    return found


PRODUCER = "upstream_service.produce"


def _runs(pid: int, module: str) -> bool:
    """Whether process ``pid`` runs ``python -m module``."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return module.encode() in argv


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
