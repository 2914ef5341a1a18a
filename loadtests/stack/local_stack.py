"""The whole stack on one machine, no Docker: Tansu + redis-server + upstream worker + ranker.

Every piece is a real process in its own process group on a free loopback port (the process
helpers of ``loadtests/stack/servers.py``, which also make children die with this process even on
SIGKILL). Service logs go to ``run_dir``; ``stop()`` (also called by ``with`` on any exception,
Ctrl-C included) stops everything this object started and copies the broker's and Redis's logs
there too.

    with LocalStack(StackOptions(run_dir=Path("runs/x"))) as stack:
        print(stack.ranker_url, stack.upstream_metrics_urls)

An existing real Redis or Kafka can stand in for the local ones (``redis_url``,
``kafka_bootstrap``): the stack never falls back to a fake.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Self

import redis
import redis.cluster

from loadtests.stack.servers import (
    FAST_GROUP_CONSUMER,
    LOOPBACK,
    REDIS_INSTALL_HINT,
    KafkaBroker,
    ManagedProcess,
    RedisCluster,
    RedisServer,
    ServiceProcess,
    StartStop,
    free_port,
)
from ranker_service.__main__ import UVICORN_FLAGS

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
EVENTS_TOPIC = "user-events"
DEAD_LETTER_TOPIC = "user-events-dlq"
REFRESH_TOPIC = "user-refresh"  # backfill refresh requests
REDIS_HELP = (
    f"{REDIS_INSTALL_HINT} (or `make system-deps`), or point the demo at a running Redis "
    "with --redis-url redis://HOST:PORT/0"
)


@dataclass
class StackOptions:
    run_dir: Path  # service logs and the copied server logs
    upstream_checkpoint: Path = REPO_ROOT / "artifacts/demo/upstream"
    online_checkpoint: Path = REPO_ROOT / "artifacts/demo/online"
    partitions: int = 4  # of the events topic
    upstream_workers: int = 1  # consumer-group members
    redis_url: str | None = None  # use this Redis instead of starting redis-server
    # Redis Cluster: start a local one (3 masters, a replica each) instead of one redis-server,
    # or, with redis_url, treat that URL as a seed node of an existing cluster.
    redis_cluster: bool = False
    kafka_bootstrap: str | None = None  # use this broker instead of starting Tansu
    upstream_env: dict[str, str] = field(default_factory=dict)  # extra UPSTREAM_* settings
    ranker_env: dict[str, str] = field(default_factory=dict)  # extra RANKER_* settings
    ready_timeout_s: float = 120.0  # model load + group join on a busy 2-core box
    # Fixed ports (None: a free one each). Worker i serves its metrics on worker_metrics_port + i.
    redis_port: int | None = None
    kafka_port: int | None = None
    ranker_port: int | None = None
    worker_metrics_port: int | None = None


class LocalStack(StartStop):
    def __init__(self, options: StackOptions) -> None:
        self.options = options
        self.redis: RedisServer | None = None
        self.redis_cluster: RedisCluster | None = None
        self.ranker_replicas: list[ServiceProcess] = []
        self.broker: KafkaBroker | None = None
        self.workers: list[ServiceProcess] = []
        self.ranker: ServiceProcess | None = None
        self.worker_ports: list[int] = []
        self.ranker_port = 0

    # --- addresses ----------------------------------------------------------------------------
    @property
    def redis_url(self) -> str:
        if self.options.redis_url:
            return self.options.redis_url
        if self.redis_cluster is not None:
            return self.redis_cluster.url
        assert self.redis is not None, "stack not started"
        return self.redis.url

    def redis_client(self) -> redis.Redis | redis.cluster.RedisCluster:
        """A sync redis-py client for the stack's Redis (a cluster client on a cluster)."""
        if self.options.redis_cluster:
            return redis.cluster.RedisCluster.from_url(self.redis_url)
        return redis.Redis.from_url(self.redis_url)

    @property
    def kafka_bootstrap(self) -> str:
        if self.options.kafka_bootstrap:
            return self.options.kafka_bootstrap
        assert self.broker is not None, "stack not started"
        return self.broker.bootstrap

    @property
    def ranker_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ranker_port}"

    @property
    def upstream_metrics_urls(self) -> list[str]:
        return [f"http://{LOOPBACK}:{port}/metrics" for port in self.worker_ports]

    def scrape_targets(self) -> dict[str, list[str]]:
        """Prometheus job name -> host:port targets (the job names of the compose stack)."""
        return {
            "ranker": [f"{LOOPBACK}:{self.ranker_port}"],
            "upstream": [f"{LOOPBACK}:{port}" for port in self.worker_ports],
        }

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self) -> Self:
        o = self.options
        o.run_dir.mkdir(parents=True, exist_ok=True)
        for path in (o.upstream_checkpoint, o.online_checkpoint):
            if not (path / "config.json").is_file():
                raise FileNotFoundError(f"no checkpoint at {path} (run `make train`)")
        try:
            if o.redis_url is None:
                if shutil.which("redis-server") is None:
                    raise RuntimeError(REDIS_HELP)
                if o.redis_cluster:
                    self.redis_cluster = RedisCluster().start()
                else:
                    self.redis = RedisServer(o.redis_port).start()
            if o.kafka_bootstrap is None:
                self.broker = KafkaBroker(o.kafka_port).start()
                self.broker.create_topic(EVENTS_TOPIC, o.partitions, exist_ok=True)
                self.broker.create_topic(DEAD_LETTER_TOPIC, 1, exist_ok=True)
                self.broker.create_topic(REFRESH_TOPIC, o.partitions, exist_ok=True)
            log.info("redis %s, kafka %s", self.redis_url, self.kafka_bootstrap)
            # Both services load their model at the same time; then wait for both.
            for i in range(o.upstream_workers):
                port = free_port() if o.worker_metrics_port is None else o.worker_metrics_port + i
                worker = ServiceProcess(
                    "upstream_service",
                    env=self._upstream_env(port),
                    name=f"upstream-{i}",
                    log_path=o.run_dir / f"upstream-{i}.log",
                )
                self.workers.append(worker.start())
                self.worker_ports.append(port)
            self.ranker_port = o.ranker_port or free_port()
            self.ranker = ServiceProcess(
                "uvicorn",
                "ranker_service.main:app",
                "--host", LOOPBACK,
                "--port", str(self.ranker_port),
                *UVICORN_FLAGS,  # uvloop, httptools, no access log
                env=self._ranker_env(),
                name="ranker",
                log_path=o.run_dir / "ranker.log",
            ).start()  # fmt: skip
            self.ranker.wait_ready(f"{self.ranker_url}/readyz", timeout=o.ready_timeout_s)
            for worker, port in zip(self.workers, self.worker_ports, strict=True):
                worker.wait_ready(f"http://{LOOPBACK}:{port}/readyz", timeout=o.ready_timeout_s)
        except BaseException:
            self.stop()
            raise
        log.info("ranker %s, upstream metrics %s", self.ranker_url, self.upstream_metrics_urls)
        return self

    def _upstream_env(self, metrics_port: int) -> dict[str, str]:
        o = self.options
        env = {
            "UPSTREAM_KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            "UPSTREAM_EVENTS_TOPIC": EVENTS_TOPIC,
            "UPSTREAM_DEAD_LETTER_TOPIC": DEAD_LETTER_TOPIC,
            "UPSTREAM_REFRESH_TOPIC": REFRESH_TOPIC,
            "UPSTREAM_REDIS_URL": self.redis_url,
            "UPSTREAM_CHECKPOINT_PATH": str(o.upstream_checkpoint),
            "UPSTREAM_METRICS_HOST": LOOPBACK,
            "UPSTREAM_METRICS_PORT": str(metrics_port),
            # One intra-op thread each: the ranker, the worker and the producer share 2 cores.
            "UPSTREAM_TORCH_THREADS": "1",
            **{f"UPSTREAM_{k.upper()}": str(v) for k, v in FAST_GROUP_CONSUMER.items()},
        }
        if o.redis_cluster:
            env["UPSTREAM_REDIS_CLUSTER"] = "true"
        return env | o.upstream_env

    def _ranker_env(self) -> dict[str, str]:
        env = {
            "RANKER_REDIS_URL": self.redis_url,
            "RANKER_CHECKPOINT_PATH": str(self.options.online_checkpoint),
        }
        if self.options.redis_cluster:
            env["RANKER_REDIS_CLUSTER"] = "true"
        return env | self.options.ranker_env

    def start_ranker_replica(self) -> str:
        """Start one more ranker (same checkpoint, same Redis) on a free port; its base URL."""
        port = free_port()
        replica = ServiceProcess(
            "uvicorn",
            "ranker_service.main:app",
            "--host", LOOPBACK,
            "--port", str(port),
            *UVICORN_FLAGS,
            env=self._ranker_env(),
            name=f"ranker-{len(self.ranker_replicas) + 1}",
            log_path=self.options.run_dir / f"ranker-{len(self.ranker_replicas) + 1}.log",
        ).start()  # fmt: skip
        self.ranker_replicas.append(replica)
        url = f"http://{LOOPBACK}:{port}"
        replica.wait_ready(f"{url}/readyz", timeout=self.options.ready_timeout_s)
        return url

    def stop(self) -> None:
        """Stop everything this stack started, in reverse order; idempotent."""
        for process in [*self.ranker_replicas, self.ranker, *reversed(self.workers)]:
            if process is not None:
                with contextlib.suppress(Exception):
                    process.stop(timeout=15)
        for server in (self.broker, self.redis):
            if server is not None:
                with contextlib.suppress(Exception):
                    server.stop()
                with contextlib.suppress(OSError):
                    shutil.copy(server.log_path, self.options.run_dir / server.log_path.name)
        if self.redis_cluster is not None:
            self.redis_cluster.stop()


def run_foreground(
    argv: Sequence[str], env: Mapping[str, str] | None = None, timeout: float | None = None
) -> int:
    """Run a command with this terminal's output (progress bars show), in its own process group
    so that Ctrl-C, a timeout or a failure here stops it and all its children."""
    process = ManagedProcess(
        argv, name="foreground", env={**os.environ, **(env or {})}, inherit_output=True
    ).start()
    try:
        return process.wait(timeout)
    finally:
        process.stop(timeout=10)


def interrupt_on_termination() -> None:
    """Turn SIGTERM and SIGHUP into KeyboardInterrupt, so ``finally`` blocks clean up as they
    do on Ctrl-C; and make sure Ctrl-C raises it (a shell's background job starts with SIGINT
    ignored)."""

    def _raise(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"received {signal.Signals(signum).name}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]
