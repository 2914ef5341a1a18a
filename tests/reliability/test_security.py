"""Safe to expose: Redis password and TLS, Kafka SASL/TLS settings, no committed secret,
non-root containers, checkpoints never unpickled, the reload endpoint off or protected.

Redis password and TLS are tested against real redis-servers (TLS with a throwaway self-signed
certificate made by ``openssl``). There is no TLS or SASL Kafka broker here (Tansu runs
plaintext), so the Kafka security settings are checked at the unit level: that they reach the
kafka-python clients unchanged.
"""

from __future__ import annotations

import re
import secrets
import shutil
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest
import redis
import torch

from loadtests.stack.servers import LOOPBACK, REPO_ROOT, ManagedProcess, RedisServer, free_port
from ranker_service.settings import Settings as RankerSettings
from ranker_service.store import FeatureStore
from shared_model.checkpoint import build_model, save_checkpoint
from shared_model.config import tiny_config
from shared_model.contract import UserEvent
from tests.ranker_service.helpers import rank_body, self_signed_certificate
from tests.reliability.conftest import (
    RankerProcess,
    UpstreamProcess,
    http_get,
    newest_seen,
    ranker_env,
    send_events,
    upstream_env,
    wait_for,
)
from upstream_service import consumer as upstream_consumer
from upstream_service.settings import Settings as UpstreamSettings
from upstream_service.worker import connect_redis

CFG = tiny_config("online")


def rank(base: str) -> dict:
    body = rank_body(2, CFG, user_id="sec-user")
    del body["context"]["time_ms"]
    r = httpx.post(f"{base}/v1/rank", json=body, timeout=10, trust_env=False)
    assert r.status_code == 200, r.text
    return r.json()


# ------------------------------------------------------------------------------------------
# Redis password
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_redis_password_right_and_wrong(kafka_broker, checkpoints, new_topic, producer_for) -> None:
    password = secrets.token_urlsafe(16)  # made at run time: nothing secret is committed
    with RedisServer(password=password) as locked:
        good_env = ranker_env(locked.url, checkpoints.online, reload_token=password[:12])
        wrong_url = locked.url.replace(password, "wrong-" + password)  # token_urlsafe: no quoting
        bad_env = ranker_env(wrong_url, checkpoints.online)
        with (
            RankerProcess(good_env, name="ranker-pw") as good,
            RankerProcess(bad_env, name="ranker-badpw") as bad,
        ):
            good.wait_ready(f"{good.base}/readyz", timeout=60)
            bad.wait_alive(timeout=60)
            # Right password: ready, reads Redis. Wrong one: alive, not ready, still ranks.
            assert rank(good.base)["upstream"]["outcome"] == "missing"
            status, body = http_get(f"{bad.base}/readyz")
            assert status == 503 and '"redis_reachable":false' in body
            assert rank(bad.base)["upstream"]["outcome"] == "unavailable"
            # The reload endpoint: off without a token (404), 401 without the right one.
            assert httpx.post(f"{bad.base}/admin/reload", trust_env=False).status_code == 404
            for auth in (None, "Bearer nope", f"Basic {password[:12]}"):
                headers = {"Authorization": auth} if auth else {}
                r = httpx.post(f"{good.base}/admin/reload", headers=headers, trust_env=False)
                assert r.status_code == 401, r.text
            for p in (good, bad):
                assert password not in p.log_text()

        # The worker: the password from UPSTREAM_REDIS_PASSWORD (the URL has none).
        topic = new_topic(kafka_broker, partitions=1)
        env = upstream_env(
            bootstrap=kafka_broker.bootstrap,
            redis_url=f"redis://{LOOPBACK}:{locked.port}/0",
            topic=topic,
            checkpoint=checkpoints.upstream,
        )
        with UpstreamProcess({**env, "UPSTREAM_REDIS_PASSWORD": password}) as worker:
            worker.wait_worker_ready()
            event = UserEvent("sec-e1", "sec-user", 1_750_000_000_000, "conversion", "i")
            send_events(producer_for(kafka_broker.bootstrap), topic, [event])
            wait_for(
                lambda: newest_seen(locked.client(), "sec-user") == event.timestamp_ms,
                30,
                "an embedding written with the password",
            )
        rejected = UpstreamProcess(
            {**env, "UPSTREAM_REDIS_PASSWORD": f"not-{password}"}, name="upstream-badpw"
        )
        with rejected:
            # It refuses to start (redis-py retries the AUTH for a few seconds first).
            assert rejected.wait(timeout=60) != 0
            assert not rejected.is_ready()
        log = rejected.log_text()
        assert re.search(r"AuthenticationError|WRONGPASS|invalid password", log), log[-2000:]
        assert password not in log


# ------------------------------------------------------------------------------------------
# Redis TLS
# ------------------------------------------------------------------------------------------


@pytest.fixture
def tls_redis(tmp_path: Path):
    """A redis-server that speaks TLS only, with a throwaway self-signed certificate."""
    cert, key = self_signed_certificate(tmp_path)
    port = free_port()
    server = ManagedProcess(
        [shutil.which("redis-server") or "redis-server",
         "--port", "0", "--tls-port", str(port), "--bind", LOOPBACK,
         "--tls-cert-file", str(cert), "--tls-key-file", str(key),
         "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no",
         "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        name="redis-tls",
    )  # fmt: skip
    url = f"rediss://{LOOPBACK}:{port}/0"
    with server:

        def answers() -> bool:
            try:
                return redis.Redis.from_url(url, ssl_ca_certs=str(cert), socket_timeout=1).ping()
            except (redis.RedisError, OSError):
                return False

        server.wait_until(answers, timeout=20, what="TLS redis")
        yield url, cert


@pytest.mark.slow
def test_redis_tls_end_to_end(tls_redis, checkpoints) -> None:
    url, cert = tls_redis
    # Plaintext to a TLS port fails: TLS is really in use.
    with pytest.raises((redis.RedisError, OSError)):
        redis.Redis.from_url(url.replace("rediss", "redis"), socket_timeout=1).ping()
    env = ranker_env(url, checkpoints.online, redis_tls_ca_file=str(cert))
    with RankerProcess(env, name="ranker-tls") as ranker:
        ranker.wait_ready(f"{ranker.base}/readyz", timeout=60)
        assert rank(ranker.base)["history_source"] == "redis"
    # The worker's client, built from its settings, talks TLS to the same server.
    settings = UpstreamSettings(redis_url=url, redis_ssl_ca_certs=str(cert))
    client = connect_redis(settings)
    assert client.ping()
    client.close()


# ------------------------------------------------------------------------------------------
# Settings reach the clients (unit level: no TLS/SASL broker here)
# ------------------------------------------------------------------------------------------


def test_kafka_sasl_and_tls_settings_reach_kafka_python(monkeypatch) -> None:
    secret = secrets.token_urlsafe(12)
    monkeypatch.setenv("UPSTREAM_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("UPSTREAM_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("UPSTREAM_KAFKA_SASL_USERNAME", "llatte")
    monkeypatch.setenv("UPSTREAM_KAFKA_SASL_PASSWORD", secret)
    monkeypatch.setenv("UPSTREAM_KAFKA_SSL_CAFILE", "/etc/kafka/ca.pem")
    monkeypatch.setenv("UPSTREAM_KAFKA_SSL_CERTFILE", "/etc/kafka/client.pem")
    monkeypatch.setenv("UPSTREAM_KAFKA_SSL_KEYFILE", "/etc/kafka/client.key")
    settings = UpstreamSettings()
    assert secret not in repr(settings) and secret not in str(settings.model_dump())

    captured: dict[str, dict] = {}
    monkeypatch.setattr(
        upstream_consumer, "KafkaConsumer", lambda **kw: captured.setdefault("consumer", kw)
    )
    monkeypatch.setattr(
        upstream_consumer, "KafkaProducer", lambda **kw: captured.setdefault("producer", kw)
    )
    upstream_consumer.build_consumer(settings)
    upstream_consumer.build_producer(settings)
    expected = {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "llatte",
        "sasl_plain_password": secret,
        "ssl_cafile": "/etc/kafka/ca.pem",
        "ssl_certfile": "/etc/kafka/client.pem",
        "ssl_keyfile": "/etc/kafka/client.key",
    }
    for client in ("consumer", "producer"):
        assert expected.items() <= captured[client].items(), client


def test_redis_tls_and_password_settings_reach_redis_py() -> None:
    secret = secrets.token_urlsafe(12)
    up = connect_redis(
        UpstreamSettings(
            redis_url="rediss://redis.internal:6380/0",
            redis_password=secret,
            redis_ssl_ca_certs="/etc/redis/ca.pem",
        )
    )
    kwargs = up.connection_pool.connection_kwargs
    assert up.connection_pool.connection_class is redis.SSLConnection
    assert kwargs["password"] == secret and kwargs["ssl_ca_certs"] == "/etc/redis/ca.pem"

    ranker_settings = RankerSettings(
        redis_url=f"rediss://:{secret}@redis.internal:6380/0",
        redis_tls_ca_file=Path("/etc/redis/ca.pem"),
        redis_reader="redis-py",
    )
    assert secret not in repr(ranker_settings)
    store = FeatureStore(ranker_settings)
    assert store.client is not None
    pool = store.client.connection_pool
    assert pool.connection_class.__name__ == "SSLConnection"
    assert pool.connection_kwargs["password"] == secret
    assert pool.connection_kwargs["ssl_ca_certs"] == "/etc/redis/ca.pem"


def test_redis_tls_and_password_settings_reach_the_multiplexed_reader(tmp_path: Path) -> None:
    secret = secrets.token_urlsafe(12)
    ca, _ = self_signed_certificate(tmp_path)
    settings = RankerSettings(
        redis_url=f"rediss://reader:{secret}@redis.internal:6380/2", redis_tls_ca_file=ca
    )
    mux = FeatureStore(settings).mux
    assert mux is not None
    assert (mux.host, mux.port, mux.path) == ("redis.internal", 6380, None)
    assert mux.ssl is not None and mux.ssl.verify_mode == ssl.CERT_REQUIRED
    assert mux.ssl.check_hostname and mux.ssl.cert_store_stats()["x509_ca"] == 1  # ca.pem
    assert mux.setup == [("AUTH", "reader", secret), ("SELECT", 2)]
    with pytest.raises(FileNotFoundError):  # the CA file is really read
        FeatureStore(settings.model_copy(update={"redis_tls_ca_file": tmp_path / "missing"}))


# ------------------------------------------------------------------------------------------
# Checkpoints: a crafted pickle never runs
# ------------------------------------------------------------------------------------------


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))  # unpickling would create the marker file


def test_ranker_refuses_a_pickled_checkpoint(tmp_path: Path, redis_server) -> None:
    ckpt, marker = tmp_path / "online", tmp_path / "pickle-code-ran"
    save_checkpoint(ckpt, build_model(CFG), CFG)
    torch.save({"weights": _Payload(marker)}, ckpt / "model.safetensors")
    with RankerProcess(ranker_env(redis_server.url, ckpt), name="ranker-pickle") as ranker:
        # Startup fails (a checkpoint that does not load is no server at all).
        assert ranker.wait(timeout=60) != 0
    assert "not a readable safetensors file" in ranker.log_text()
    assert not marker.exists()


# ------------------------------------------------------------------------------------------
# Repository and images
# ------------------------------------------------------------------------------------------

SECRET_PATTERNS = {
    "private key": re.compile(r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED )?PRIVATE KEY-----"),
    "AWS access key": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    "Slack token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    "OpenAI/Anthropic key": re.compile(r"\bsk-(?:ant-)?[A-Za-z0-9_-]{32,}"),
    "Google API key": re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"),
    "JWT": re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
    # A password in a URL (redis://:pw@host, kafka://user:pw@host) that is not a placeholder.
    "password in URL": re.compile(
        r"\b[a-z]+s?://[^\s/:@'\"]*:(?!\$\{|\{|<|\*)"
        r"(?!(?:secret|password|changeme|example|pass|pw)@)[^\s@/'\"]{6,}@"
    ),
    # key = "literal" for secret-ish names, unless the value is a placeholder or a reference.
    "secret assignment": re.compile(
        r"(?i)\b(?:password|passwd|secret|api_?key|access_?key|token)\s*[:=]\s*"
        r"['\"](?!\$\{|<|changeme|example|test|dummy|x+['\"])[A-Za-z0-9+/_\-]{16,}['\"]"
    ),
}
SECRET_FILE_NAMES = re.compile(r"(^|/)(\.env(\..*)?|id_rsa|id_ed25519|.*\.pem|.*\.key|.*\.p12)$")


def test_no_secret_is_committed() -> None:
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    findings = []
    scanned = 0
    for name in (f.decode() for f in files if f):
        path = REPO_ROOT / name
        if SECRET_FILE_NAMES.search(name) and not name.endswith(".env.example"):
            findings.append(f"{name}: a key or env file is committed")
        if not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        text = path.read_bytes()
        if b"\0" in text[:8192]:
            continue  # binary
        scanned += 1
        for line_no, line in enumerate(text.decode(errors="replace").splitlines(), 1):
            for what, pattern in SECRET_PATTERNS.items():
                if pattern.search(line):
                    findings.append(f"{name}:{line_no}: {what}")
    assert scanned > 50  # the scan really read the repository
    assert not findings, "\n".join(findings)


def test_the_secret_scan_catches_what_it_should() -> None:
    # Built at run time so that this file itself holds no secret-looking string.
    planted = {
        "private key": "-----BEGIN " + "PRIVATE KEY-----",
        "AWS access key": "AKIA" + "ABCDEFGHIJKLMNOP",
        "password in URL": "redis://:" + "hunter2hunter2" + "@cache:6379/0",
        "secret assignment": 'api_key = "' + "Zx9" * 8 + '"',
    }
    for what, line in planted.items():
        assert SECRET_PATTERNS[what].search(line), what
    for harmless in (
        "redis://:${REDIS_PASSWORD}@redis:6379/0",
        "redis://:secret@host:6379/0",
        'token = "test-token"',
    ):
        assert not any(p.search(harmless) for p in SECRET_PATTERNS.values()), harmless


def dockerfiles() -> list[Path]:
    names = subprocess.run(
        ["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, check=True, text=True
    ).stdout.split()
    return [REPO_ROOT / n for n in names if Path(n).name.startswith("Dockerfile")]


def test_containers_run_as_non_root() -> None:
    files = dockerfiles()
    if not files:
        pytest.skip("no Dockerfile committed yet")
    for path in files:
        lines = [ln.strip() for ln in path.read_text().splitlines()]
        final_stage = max(i for i, ln in enumerate(lines) if ln.upper().startswith("FROM "))
        users = [
            ln.split(None, 1)[1] for ln in lines[final_stage:] if ln.upper().startswith("USER ")
        ]
        assert users, f"{path.relative_to(REPO_ROOT)}: the final stage never sets USER"
        user = users[-1].split(":")[0]
        assert user not in ("root", "0"), f"{path.relative_to(REPO_ROOT)} runs as {user}"
        # No secret is baked into the image through ENV or ARG.
        for ln in lines:
            if re.match(r"(?i)(ENV|ARG)\s", ln) and re.search(r"(?i)password|secret|token", ln):
                assert re.search(r"(?i)(password|secret|token)\w*\s*=?\s*($|\$)", ln), ln


def test_docker_build_context_excludes_local_state() -> None:
    ignore = REPO_ROOT / ".dockerignore"
    if not ignore.exists():
        pytest.skip("no .dockerignore committed yet")
    text = ignore.read_text()
    # Either an allow-list (everything excluded, code re-included) or explicit exclusions.
    allow_list = re.search(r"^\*\s*$", text, re.M) is not None
    assert allow_list or all(p in text for p in (".env", ".venv", "artifacts"))
    assert ".env" not in re.findall(r"^!(.*)$", text, re.M)
