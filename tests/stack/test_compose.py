"""docker-compose.yml (+ docker-compose.gpu.yml): valid, consistent with the code, and free of
the defects a running engine would show (PID 1, topics, host paths, eviction, budgets, images,
GPUs, disk, seeding, secrets).

No Docker engine is needed: ``docker-compose config`` (Debian's docker-compose package) parses,
validates against its Compose schema and interpolates the file without one. The consistency
checks read the file itself, so they run everywhere PyYAML does.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from ranker_service.settings import Settings as RankerSettings
from upstream_service.settings import Settings as UpstreamSettings

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read docker-compose.yml")

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
PROMETHEUS = ROOT / "loadtests" / "monitoring" / "prometheus.yml"
GPU_OVERRIDE = ROOT / "docker-compose.gpu.yml"
ALERTS = ROOT / "loadtests" / "monitoring" / "alerts.yml"
ALL_PROFILES = ["traffic", "loadtest"]
SECRET_FILES = {"redis_password", "ranker_redis_url", "grafana_admin_password"}
# The test contents of the secret files, for the settings checks.
SECRET_VALUES = {
    "/run/secrets/redis_password": "secret",
    "/run/secrets/ranker_redis_url": "redis://:secret@redis:6379/0",
}
ONE_SHOTS = {"kafka-init", "locust-seed"}
DOCKER_COMPOSE_HINT = "docker-compose is not installed: `apt-get install -y docker-compose`"
# Compose-spec keys that Compose v2 honours and Debian's docker-compose v1 schema predates; they
# are stripped (and only they) before v1 validates the file, and asserted on separately.
V2_ONLY_LINE = re.compile(r"^\s*bind: \{create_host_path: false\}\n", re.M)


def _interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} (enough for this file)."""
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, op, arg = m.group(1), m.group(2), m.group(3) or ""
            if name in env:
                return env[name]
            if op == ":?":
                raise KeyError(f"{name} is required: {arg}")
            return arg if op == ":-" else ""

        return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", sub, value).replace("$$", "$")
    if isinstance(value, list):
        return [_interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: _interpolate(v, env) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services with variables interpolated from the file's defaults."""
    return _interpolate(raw["services"], {})


@pytest.fixture(scope="module")
def gpu_override() -> dict[str, Any]:
    return _interpolate(yaml.safe_load(GPU_OVERRIDE.read_text()), {})


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _resolved_env(service: dict[str, Any]) -> dict[str, str]:
    """The environment the process sees after docker/secrets-env.sh (NAME__FILE -> NAME)."""
    out = {}
    for key, value in _env(service).items():
        if key.endswith("__FILE"):
            out[key.removesuffix("__FILE")] = SECRET_VALUES[value]
        else:
            out[key] = value
    return out


def _docker_compose(tmp: Path, *args: str, files: tuple[Path, ...] = (COMPOSE,)):
    """docker-compose v1 on copies of the files without the v2-only keys (V2_ONLY_LINE)."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip(DOCKER_COMPOSE_HINT)
    names = []
    for f in files:
        (tmp / f.name).write_text(V2_ONLY_LINE.sub("", f.read_text()))
        names += ["-f", str(tmp / f.name)]
    clean = {k: v for k, v in os.environ.items() if "COMPOSE" not in k}
    return subprocess.run(
        [binary, "--project-directory", str(ROOT), *names, *args],
        env=clean,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_docker_compose_config_validates(tmp_path: Path) -> None:
    profiles = [arg for p in ALL_PROFILES for arg in ("--profile", p)]
    result = _docker_compose(tmp_path, *profiles, "config", "--quiet")
    assert result.returncode == 0, result.stderr
    listed = _docker_compose(tmp_path, *profiles, "config", "--services")
    expected = {"kafka", "kafka-init", "redis", "redis-exporter", "upstream", "ranker"}
    expected |= {"producer", "prometheus", "grafana", "locust-seed", "locust"}
    assert set(listed.stdout.split()) == expected
    both = (COMPOSE, GPU_OVERRIDE)
    merged = _docker_compose(tmp_path, *profiles, "config", files=both)
    assert merged.returncode == 0, merged.stderr
    upstream = yaml.safe_load(merged.stdout)["services"]["upstream"]
    assert upstream["image"].startswith("llatte-upstream-cuda:")
    assert upstream["environment"]["UPSTREAM_DEVICE"] == "cuda"
    assert "UPSTREAM_REDIS_PASSWORD__FILE" in upstream["environment"]  # merged, not replaced


def test_plain_up_starts_a_worker(services: dict[str, dict[str, Any]]) -> None:
    """No profile needed for the core: `docker compose up` alone runs a (CPU) worker."""
    for name in ("kafka", "kafka-init", "redis", "upstream", "ranker", "prometheus", "grafana"):
        assert "profiles" not in services[name], name
    assert services["upstream"]["build"]["dockerfile"] == "upstream_service/Dockerfile.cpu"
    assert _env(services["upstream"])["UPSTREAM_DEVICE"] == "cpu"


def test_secrets_are_files_never_environment(raw: dict[str, Any]) -> None:
    text = COMPOSE.read_text()
    assert "PASSWORD:-" not in text and "${REDIS_PASSWORD" not in text
    assert set(raw["secrets"]) == SECRET_FILES
    for name, secret in raw["secrets"].items():
        assert secret == {"file": f"./secrets/{name}"}
    for name, service in raw["services"].items():
        for key, value in _env(service).items():
            if re.search(r"PASSWORD|SECRET|TOKEN", key) or re.match(r"\w+://[^/]*@", value):
                assert key.endswith("_FILE"), f"{name}.{key} = {value!r}"
                secret = value.removeprefix("/run/secrets/")
                assert secret in service["secrets"], f"{name}: {key} names no mounted secret"
    assert _env(raw["services"]["grafana"])["GF_SECURITY_ADMIN_PASSWORD__FILE"]
    assert "RANKER_REDIS_URL" not in _env(raw["services"]["ranker"])
    gitignored = (ROOT / ".gitignore").read_text().split()
    assert ".env" in gitignored and "/secrets/" in gitignored
    assert not re.search(r"^!.*secrets", (ROOT / ".dockerignore").read_text(), re.M)


def test_every_service_is_healthchecked_pinned_and_non_root(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        if name in ONE_SHOTS:
            assert service["restart"] == "no", name
        else:
            assert "test" in service.get("healthcheck", {}), f"{name} has no healthcheck"
        image = service["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and re.search(r"\d", tag) and tag != "latest", f"{name}: unpinned {image}"
        if "build" in service:
            dockerfile = ROOT / service["build"]["dockerfile"]
            users = re.findall(r"^USER\s+(\S+)", dockerfile.read_text(), re.M)
            assert users and users[-1] not in ("root", "0"), f"{dockerfile} runs as root"
        else:
            assert service.get("user", "0").split(":")[0] not in ("0", "root"), name
        for dep, cond in service.get("depends_on", {}).items():
            wanted = "service_completed_successfully" if dep in ONE_SHOTS else "service_healthy"
            assert cond == {"condition": wanted}, f"{name} -> {dep}: {cond}"
        assert service["logging"]["options"]["max-size"], f"{name}: unbounded container logs"


def test_kafka_runs_the_image_command_and_topics_come_from_init(
    services: dict[str, dict[str, Any]],
) -> None:
    kafka, init = services["kafka"], services["kafka-init"]
    # PID 1 is the image's own start command: SIGTERM reaches the broker.
    assert "command" not in kafka and "entrypoint" not in kafka
    assert kafka["stop_grace_period"] == "60s"
    assert "user-events" not in " ".join(kafka["healthcheck"]["test"])  # liveness only
    assert init["image"] == kafka["image"]
    assert init["entrypoint"] == ["bash", "/opt/llatte/kafka-init.sh"]
    (mount,) = init["volumes"]
    assert (ROOT / mount["source"] / "kafka-init.sh").is_file()
    env = _env(init)
    assert env["EVENTS_TOPIC"] == _env(services["upstream"])["UPSTREAM_EVENTS_TOPIC"]
    assert env["DEAD_LETTER_TOPIC"] == _env(services["upstream"])["UPSTREAM_DEAD_LETTER_TOPIC"]
    assert env["REFRESH_TOPIC"] == _env(services["upstream"])["UPSTREAM_REFRESH_TOPIC"]
    assert int(env["KAFKA_RETENTION_MS"]) <= 7 * 24 * 3600 * 1000
    assert int(env["KAFKA_RETENTION_BYTES"]) > 0 and env["KAFKA_COMPRESSION"] == "zstd"
    for name in ("upstream", "producer"):
        assert services[name]["depends_on"]["kafka-init"] == {
            "condition": "service_completed_successfully"
        }
    assert _env(kafka)["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_checkpoints_are_binds_docker_never_creates(raw: dict[str, Any]) -> None:
    for name in ("upstream", "ranker", "locust-seed"):
        for volume in raw["services"][name]["volumes"]:
            if "artifacts" in str(volume):
                assert isinstance(volume, dict), f"{name}: short syntax creates the host path"
                assert volume["type"] == "bind" and volume["read_only"] is True
                assert volume["bind"] == {"create_host_path": False}, name
    makefile = (ROOT / "Makefile").read_text()
    for stage in ("upstream", "online"):
        assert (
            f"artifacts/demo/{stage}"
            in raw["services"]["upstream" if stage == "upstream" else "ranker"]["volumes"][0][
                "source"
            ]
        )
    assert "CHECKPOINT_FILES := $(foreach s,upstream online," in makefile
    assert "chmod -R a+rX artifacts/demo" in makefile


def test_redis_keeps_accepting_writes_when_full(services: dict[str, dict[str, Any]]) -> None:
    redis_cmd = services["redis"]["command"][-1]
    policy = re.search(r"--maxmemory-policy (\S+)", redis_cmd).group(1)
    # Histories never expire, so a volatile-* policy would evict only embeddings and then fail
    # appends; allkeys-* evicts inactive users' keys and writes keep succeeding.
    assert policy.startswith("allkeys-"), policy
    assert '--maxmemory "$REDIS_MAXMEMORY"' in redis_cmd
    assert _env(services["redis"])["REDIS_MAXMEMORY"] == "2gb"  # passed into the container
    exporter = services["redis-exporter"]
    assert _env(exporter)["REDIS_PASSWORD_FILE"] == "/run/secrets/redis_password"
    prometheus = yaml.safe_load(PROMETHEUS.read_text())
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    assert jobs["redis"]["dns_sd_configs"][0]["names"] == ["redis-exporter"]
    assert exporter["expose"] == [str(jobs["redis"]["dns_sd_configs"][0]["port"])]
    assert prometheus["rule_files"] == [ALERTS.name]
    rules = {
        r["alert"]: r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]
    }
    assert "redis_memory_max_bytes" in rules["RedisNearMaxmemory"]["expr"]
    assert "redis_evicted_keys_total" in rules["RedisEvictingKeys"]["expr"]


def test_promtool_accepts_the_config_and_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    for args in (["check", "config", str(PROMETHEUS)], ["check", "rules", str(ALERTS)]):
        done = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


def test_ranker_redis_timeout_is_the_code_default(
    services: dict[str, dict[str, Any]],
) -> None:
    env = _env(services["ranker"])
    floor = RankerSettings.model_fields["redis_timeout_ms"].default
    for key in ("RANKER_REDIS_TIMEOUT_MS", "RANKER_REDIS_BUDGET_MS"):
        assert float(env.get(key, floor)) >= floor, f"{key}={env[key]} is below {floor} ms"


def test_images_fit_their_hosts(
    services: dict[str, dict[str, Any]], gpu_override: dict[str, Any]
) -> None:
    """CPU services never pull the CUDA image; the GPU override gives every replica all GPUs
    and the entrypoint picks one per replica."""
    cuda = "upstream_service/Dockerfile"
    for name, service in services.items():
        if "build" in service:
            assert service["build"]["dockerfile"] != cuda, f"{name} builds the CUDA image"
    assert services["producer"]["build"]["dockerfile"] == "upstream_service/Dockerfile.producer"
    gpu = gpu_override["services"]["upstream"]
    assert gpu["build"]["dockerfile"] == cuda
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device == {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}
    lock_dir = _env(gpu)["GPU_LOCK_DIR"]
    assert f"gpu-locks:{lock_dir}" in gpu["volumes"] and "gpu-locks" in gpu_override["volumes"]
    dockerfile = (ROOT / cuda).read_text()
    assert re.search(r'^ENTRYPOINT \["secrets-env", "pick-gpu"\]$', dockerfile, re.M)
    assert f"chown 10001 {lock_dir}" in dockerfile
    makefile = (ROOT / "Makefile").read_text()
    assert "docker info --format '{{json .Runtimes}}'" in makefile  # the toolkit, not nvidia-smi


def _settings_from(cls: type, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    for key in list(os.environ):
        if key.startswith(cls.model_config["env_prefix"]):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return cls()


def _known_env(cls: type) -> set[str]:
    prefix = cls.model_config["env_prefix"]
    return {f"{prefix}{field}".upper() for field in cls.model_fields}


@pytest.mark.parametrize("name", ["upstream", "producer"])
def test_upstream_environment_matches_settings(
    name: str, services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _resolved_env(services[name])
    known = _known_env(UpstreamSettings)
    assert set(env) <= known, f"{name}: unknown {sorted(set(env) - known)}"
    settings = _settings_from(UpstreamSettings, env, monkeypatch)  # values parse and validate
    if name != "producer":
        assert settings.redis_password.get_secret_value() == "secret"
        assert settings.metrics_port == 9100
        assert str(settings.checkpoint_path).startswith("/models/")


def test_ranker_environment_matches_settings(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _resolved_env(services["ranker"])
    known = _known_env(RankerSettings)
    assert set(env) <= known, f"unknown {sorted(set(env) - known)}"
    settings = _settings_from(RankerSettings, env, monkeypatch)
    url = urlparse(settings.redis_url.get_secret_value())
    assert (url.hostname, url.port, url.password) == ("redis", 6379, "secret")
    assert str(settings.checkpoint_path).startswith("/models/")


def _port_in(text: str) -> int:
    ports = {int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", text)}
    assert len(ports) == 1, text
    return ports.pop()


def test_ports_agree_everywhere(services: dict[str, dict[str, Any]]) -> None:
    prometheus = yaml.safe_load(PROMETHEUS.read_text())
    scrape = {job["job_name"]: job["dns_sd_configs"][0] for job in prometheus["scrape_configs"]}
    # upstream: settings -> expose -> healthcheck -> Prometheus -> Dockerfile
    upstream_port = int(_env(services["upstream"])["UPSTREAM_METRICS_PORT"])
    ranker_cmd = services["ranker"]["command"]
    ranker_port = int(ranker_cmd[ranker_cmd.index("--port") + 1])
    assert services["upstream"]["expose"] == [str(upstream_port)]
    assert _port_in(" ".join(services["upstream"]["healthcheck"]["test"])) == upstream_port
    assert scrape["upstream"] == {**scrape["upstream"], "names": ["upstream"], "port": 9100}
    assert scrape["ranker"]["names"] == ["ranker"] and scrape["ranker"]["port"] == ranker_port
    assert services["ranker"]["expose"] == [str(ranker_port)]
    assert _port_in(" ".join(services["ranker"]["healthcheck"]["test"])) == ranker_port
    # One ephemeral loopback port per replica: no host-port range to outgrow.
    assert services["ranker"]["ports"] == [f"127.0.0.1::{ranker_port}"]
    assert services["locust"]["command"][-1] == f"http://ranker:{ranker_port}"
    for dockerfile, port in (
        ("upstream_service/Dockerfile", upstream_port),
        ("upstream_service/Dockerfile.cpu", upstream_port),
        ("ranker_service/Dockerfile", ranker_port),
    ):
        text = (ROOT / dockerfile).read_text()
        assert re.search(rf"^EXPOSE {port}$", text, re.M), dockerfile
        assert f"127.0.0.1:{port}/healthz" in text, dockerfile
    # Kafka and Redis: the addresses the services are given are the ones the servers listen on.
    assert "PLAINTEXT://kafka:9092" in _env(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"]
    assert _env(services["upstream"])["UPSTREAM_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert _env(services["kafka-init"])["KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert services["redis"]["expose"] == ["6379"]


def _dockerfile_cmd(path: str) -> list[str]:
    import json

    cmds = re.findall(r"^CMD (\[.*\])$", (ROOT / path).read_text(), re.M)
    return json.loads(cmds[-1])


def test_commands_are_the_real_entry_points(services: dict[str, dict[str, Any]]) -> None:
    upstream_cmd = services["upstream"]["command"]
    assert upstream_cmd == _dockerfile_cmd("upstream_service/Dockerfile")
    assert upstream_cmd == _dockerfile_cmd("upstream_service/Dockerfile.cpu")
    assert upstream_cmd[1:] == ["-m", "upstream_service"]
    assert importlib.util.find_spec("upstream_service.__main__") is not None

    ranker_cmd = services["ranker"]["command"]
    assert ranker_cmd == _dockerfile_cmd("ranker_service/Dockerfile")
    assert ranker_cmd[ranker_cmd.index("--loop") + 1] == "uvloop"
    assert ranker_cmd[ranker_cmd.index("--http") + 1] == "httptools"
    module, attr = ranker_cmd[1].split(":")
    assert hasattr(importlib.import_module(module), attr)

    producer_cmd = services["producer"]["command"]
    assert producer_cmd[1:3] == ["-m", "upstream_service.produce"]
    usage = subprocess.run(
        [sys.executable, "-m", "upstream_service.produce", "--help"],
        capture_output=True, text=True, check=True, cwd=ROOT, timeout=60,
    ).stdout  # fmt: skip
    for flag in (arg for arg in producer_cmd if arg.startswith("--")):
        assert flag in usage, f"upstream_service.produce has no {flag}"

    locust_cmd = services["locust"]["command"]
    assert locust_cmd[:2] == ["-f", "loadtests/locust/locustfile.py"]
    assert (ROOT / locust_cmd[1]).is_file()


def test_locust_users_are_seeded_first(services: dict[str, dict[str, Any]]) -> None:
    """Locust's fresh and stale users get their histories and embeddings before it starts."""
    from loadtests.locust import seed

    seeder, locust = services["locust-seed"], services["locust"]
    assert seeder["image"] == locust["image"] and seeder["profiles"] == locust["profiles"]
    assert seeder["entrypoint"] == ["python", "-m", "loadtests.locust.seed"]
    args = seeder["command"]
    assert (
        args[args.index("--checkpoint") + 1] == _env(services["ranker"])["RANKER_CHECKPOINT_PATH"]
    )
    population = args[args.index("--population-users") + 1]
    locust_args = locust["command"]
    assert locust_args[locust_args.index("--population-users") + 1] == population
    assert args[args.index("--redis-url-file") + 1] == "/run/secrets/ranker_redis_url"
    with pytest.raises(SystemExit):  # the flags it is given are its own
        seed.main(["--help"])


def test_mounted_files_exist(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if source.startswith("./") and "artifacts" not in source:
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
    prometheus_mount = services["prometheus"]["volumes"][0]
    assert (ROOT / prometheus_mount["source"]).is_dir()  # a directory, not a single file
    config = services["prometheus"]["command"][0].split("=", 1)[1]
    assert config == f"{prometheus_mount['target']}/{PROMETHEUS.name}"


def test_every_one_shot_is_adopted_by_a_long_running_service(
    services: dict[str, dict[str, Any]],
) -> None:
    """`docker compose up --wait` (make up) counts an exited container as a failure unless a
    running service of the same profiles waits for it with service_completed_successfully."""
    for shot in ONE_SHOTS:
        adopters = [
            name
            for name, service in services.items()
            if name not in ONE_SHOTS
            and service.get("depends_on", {}).get(shot, {}).get("condition")
            == "service_completed_successfully"
            and set(service.get("profiles", [])) <= set(services[shot].get("profiles", []))
        ]
        assert adopters, f"{shot} is adopted by no long-running service of its profiles"
