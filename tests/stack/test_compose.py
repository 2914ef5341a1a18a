"""docker-compose.yml: valid for a real Compose implementation, and consistent with the code.

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
SECRETS = {"REDIS_PASSWORD": "test-redis-secret", "GRAFANA_ADMIN_PASSWORD": "test-grafana"}
ALL_PROFILES = ["gpu", "cpu", "traffic", "loadtest"]
DOCKER_COMPOSE_HINT = "docker-compose is not installed: `apt-get install -y docker-compose`"


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
    """The services with variables interpolated from SECRETS and the file's defaults."""
    return _interpolate(raw["services"], SECRETS)


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _docker_compose(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip(DOCKER_COMPOSE_HINT)
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS and "COMPOSE" not in k}
    return subprocess.run(
        [binary, "-f", str(COMPOSE), *args],
        env=clean | env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_docker_compose_config_validates() -> None:
    profiles = [arg for p in ALL_PROFILES for arg in ("--profile", p)]
    result = _docker_compose(*profiles, "config", "--quiet", env=SECRETS)
    assert result.returncode == 0, result.stderr
    listed = _docker_compose(*profiles, "config", "--services", env=SECRETS)
    expected = {"kafka", "redis", "upstream", "upstream-cpu", "ranker", "producer"}
    expected |= {"prometheus", "grafana", "locust"}
    assert set(listed.stdout.split()) == expected


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_secrets_are_required_not_defaulted(missing: str) -> None:
    env = {k: v for k, v in SECRETS.items() if k != missing}
    result = _docker_compose("--profile", "cpu", "config", "--quiet", env=env)
    assert result.returncode != 0
    assert missing in result.stderr


def test_no_literal_secrets(raw: dict[str, Any]) -> None:
    for name, service in raw["services"].items():
        for key, value in _env(service).items():
            if re.search(r"PASSWORD|SECRET|TOKEN", key):
                assert re.fullmatch(r"\$\{\w+:\?[^}]*\}", value), f"{name}.{key} = {value!r}"
    # The one secret inside a URL: interpolated from the environment too.
    assert "${REDIS_PASSWORD:?" in _env(raw["services"]["ranker"])["RANKER_REDIS_URL"]


def test_every_service_is_healthchecked_pinned_and_non_root(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
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
            assert cond == {"condition": "service_healthy"}, f"{name} -> {dep}: {cond}"


def test_gpu_reserved_for_upstream_only_on_the_gpu_profile(
    services: dict[str, dict[str, Any]],
) -> None:
    gpu, cpu = services["upstream"], services["upstream-cpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert gpu["profiles"] == ["gpu"] and cpu["profiles"] == ["cpu"]
    assert "deploy" not in cpu
    assert _env(gpu)["UPSTREAM_DEVICE"] == "cuda" and _env(cpu)["UPSTREAM_DEVICE"] == "cpu"
    assert "upstream" in cpu["networks"]["default"]["aliases"]


def _settings_from(cls: type, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    for key in list(os.environ):
        if key.startswith(cls.model_config["env_prefix"]):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return cls()


@pytest.mark.parametrize("name", ["upstream", "upstream-cpu", "producer"])
def test_upstream_environment_matches_settings(
    name: str, services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _env(services[name])
    known = {f"UPSTREAM_{field}".upper() for field in UpstreamSettings.model_fields}
    assert set(env) <= known, f"{name}: unknown {sorted(set(env) - known)}"
    settings = _settings_from(UpstreamSettings, env, monkeypatch)  # values parse and validate
    if name != "producer":
        assert settings.redis_password.get_secret_value() == SECRETS["REDIS_PASSWORD"]
        assert settings.metrics_port == 9100
        assert str(settings.checkpoint_path).startswith("/models/")


def test_ranker_environment_matches_settings(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _env(services["ranker"])
    known = {f"RANKER_{field}".upper() for field in RankerSettings.model_fields}
    assert set(env) <= known, f"unknown {sorted(set(env) - known)}"
    settings = _settings_from(RankerSettings, env, monkeypatch)
    url = urlparse(settings.redis_url.get_secret_value())
    assert (url.hostname, url.port, url.password) == ("redis", 6379, SECRETS["REDIS_PASSWORD"])
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
    for name, port in (("upstream", upstream_port), ("upstream-cpu", upstream_port)):
        assert services[name]["expose"] == [str(port)]
        assert _port_in(" ".join(services[name]["healthcheck"]["test"])) == port
    assert scrape["upstream"] == {**scrape["upstream"], "names": ["upstream"], "port": 9100}
    assert scrape["ranker"]["names"] == ["ranker"] and scrape["ranker"]["port"] == ranker_port
    assert services["ranker"]["expose"] == [str(ranker_port)]
    assert _port_in(" ".join(services["ranker"]["healthcheck"]["test"])) == ranker_port
    assert services["ranker"]["ports"][0].endswith(f":{ranker_port}")
    assert services["locust"]["command"][-1] == f"http://ranker:{ranker_port}"
    for dockerfile, port in (
        ("upstream_service/Dockerfile", upstream_port),
        ("ranker_service/Dockerfile", ranker_port),
    ):
        text = (ROOT / dockerfile).read_text()
        assert re.search(rf"^EXPOSE {port}$", text, re.M), dockerfile
        assert f"127.0.0.1:{port}/healthz" in text, dockerfile
    # Kafka and Redis: the addresses the services are given are the ones the servers listen on.
    assert "PLAINTEXT://kafka:9092" in _env(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"]
    assert _env(services["upstream"])["UPSTREAM_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert services["redis"]["expose"] == ["6379"]


def _dockerfile_cmd(path: str) -> list[str]:
    import json

    cmds = re.findall(r"^CMD (\[.*\])$", (ROOT / path).read_text(), re.M)
    return json.loads(cmds[-1])


def test_commands_are_the_real_entry_points(services: dict[str, dict[str, Any]]) -> None:
    upstream_cmd = services["upstream"]["command"]
    assert upstream_cmd == services["upstream-cpu"]["command"]
    assert upstream_cmd == _dockerfile_cmd("upstream_service/Dockerfile")
    assert upstream_cmd[1:] == ["-m", "upstream_service"]
    assert importlib.util.find_spec("upstream_service.__main__") is not None

    ranker_cmd = services["ranker"]["command"]
    assert (
        ranker_cmd[0] == "uvicorn"
        and ranker_cmd[:2] == _dockerfile_cmd("ranker_service/Dockerfile")[:2]
    )
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
    assert services["producer"]["image"] == services["upstream"]["image"]

    locust_cmd = services["locust"]["command"]
    assert locust_cmd[:2] == ["-f", "loadtests/locust/locustfile.py"]
    assert (ROOT / locust_cmd[1]).is_file()


def test_mounted_files_exist(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./") and "artifacts" not in source:
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
