"""``python -m loadtests.stack``: up on the ports it is given, serves, and stops on Ctrl-C."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from loadtests.stack.__main__ import READY_LINE, example_request
from loadtests.stack.checkpoints import checkpoint_pair
from loadtests.stack.polling import wait_for
from loadtests.stack.servers import free_port
from tests.stack.test_prometheus_e2e import _alive, _descendants

ROOT = Path(__file__).resolve().parents[2]
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _post_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with _OPENER.open(request, timeout=10) as response:
        return json.loads(response.read())


def _get_text(url: str) -> str:
    with _OPENER.open(url, timeout=5) as response:
        return response.read().decode()


def _consumed(metrics_url: str) -> float:
    """upstream_events_consumed_total summed over its action_type labels."""
    lines = _get_text(metrics_url).splitlines()
    name = "upstream_events_consumed_total"
    return sum(float(x.split()[-1]) for x in lines if x.startswith(name))


@pytest.mark.slow
def test_stack_comes_up_on_its_ports_serves_and_stops_on_sigint(tmp_path: Path) -> None:
    pair = checkpoint_pair(tmp_path / "ckpt")
    ports = {name: free_port() for name in ("kafka", "redis", "ranker", "worker", "prometheus")}
    argv = [
        sys.executable, "-m", "loadtests.stack",
        "--kafka-port", str(ports["kafka"]), "--redis-port", str(ports["redis"]),
        "--ranker-port", str(ports["ranker"]), "--worker-metrics-port", str(ports["worker"]),
        "--prometheus-port", str(ports["prometheus"]),
        "--upstream-checkpoint", str(pair.upstream), "--online-checkpoint", str(pair.online),
        "--run-dir", str(tmp_path / "run"),
    ]  # fmt: skip
    out = tmp_path / "stack.out"
    with out.open("w") as sink:
        stack = subprocess.Popen(
            argv, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_for(
            lambda: READY_LINE in out.read_text() or stack.poll() is not None,
            timeout=180,
            what="the stack to come up",
        )
        banner = out.read_text()
        assert stack.poll() is None, banner
        ranker = f"http://127.0.0.1:{ports['ranker']}"
        worker_metrics = f"http://127.0.0.1:{ports['worker']}/metrics"
        for address in (f"127.0.0.1:{ports['kafka']}", ranker, worker_metrics):
            assert address in banner, banner
        if shutil.which("prometheus"):
            assert f"http://127.0.0.1:{ports['prometheus']}" in banner, banner

        answer = _post_json(f"{ranker}/v1/rank", example_request())
        assert len(answer["candidates"]) == len(example_request()["candidates"])

        produce = [
            sys.executable, "-m", "upstream_service.produce",
            "--kafka", f"127.0.0.1:{ports['kafka']}",
            "--simple", "--count", "20", "--rate", "0", "--no-progress",
        ]  # fmt: skip
        subprocess.run(produce, cwd=ROOT, check=True, timeout=60, capture_output=True)
        wait_for(lambda: _consumed(worker_metrics) >= 20, 60, "the worker to consume 20 events")

        children = _descendants(stack.pid)
        assert children
        stack.send_signal(signal.SIGINT)
        assert stack.wait(60) == 0, out.read_text()[-3000:]
        wait_for(lambda: not any(_alive(p) for p in children), 10, "every child to exit")
    finally:
        if stack.poll() is None:
            stack.kill()
            stack.wait()
