"""The scripts the images and compose run (docker/), run here with bash against stand-ins.

kafka-init.sh runs against a fake kafka-topics.sh / kafka-configs.sh that keep topics in a
directory (so a failed creation, a missing topic and an old partition count can be made on
purpose); secrets-env.sh, pick-gpu.sh and make-secrets.sh run as they do in the containers.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"

FAKE_TOPICS = r"""#!/usr/bin/env bash
# A stand-in for kafka-topics.sh: topics are files "$STATE/<name>" holding the partition count.
set -euo pipefail
echo "topics $*" >> "$STATE/calls"
op="" topic="" partitions=""
while (($#)); do
  case $1 in
    --list|--create|--describe) op=${1#--} ;;
    --topic) topic=$2; shift ;;
    --partitions) partitions=$2; shift ;;
  esac
  shift
done
case $op in
  list) [[ -f "$STATE/broker-up" ]] || exit 1 ;;
  create)
    [[ "${FAIL_CREATE:-}" == "$topic" ]] && { echo "Error creating $topic" >&2; exit 1; }
    [[ "${SKIP_CREATE:-}" == "$topic" ]] && exit 0
    [[ -f "$STATE/$topic" ]] || echo "$partitions" > "$STATE/$topic" ;;
  describe)
    [[ -f "$STATE/$topic" ]] || { echo "Topic '$topic' does not exist" >&2; exit 1; }
    printf 'Topic: %s\tTopicId: x\tPartitionCount: %s\tReplicationFactor: 1\n' \
      "$topic" "$(cat "$STATE/$topic")" ;;
esac
"""
FAKE_CONFIGS = """#!/usr/bin/env bash
echo "configs $*" >> "$STATE/calls"
"""


@pytest.fixture()
def kafka_bin(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("kafka-topics.sh", FAKE_TOPICS), ("kafka-configs.sh", FAKE_CONFIGS)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "broker-up").touch()
    return bin_dir


def _kafka_init(kafka_bin: Path, **env: str) -> subprocess.CompletedProcess[str]:
    state = kafka_bin.parent / "state"
    base = {"PATH": os.environ["PATH"], "KAFKA_BIN": str(kafka_bin), "STATE": str(state)}
    return subprocess.run(
        ["bash", str(DOCKER / "kafka-init.sh")],
        env=base | {"KAFKA_INIT_WAIT_S": "3"} | env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_kafka_init_creates_both_topics_with_retention_and_compression(kafka_bin: Path) -> None:
    done = _kafka_init(kafka_bin, KAFKA_PARTITIONS="6")
    assert done.returncode == 0, done.stderr
    state = kafka_bin.parent / "state"
    assert (state / "user-events").read_text().strip() == "6"
    assert (state / "user-events-dlq").read_text().strip() == "1"
    assert (state / "user-refresh").read_text().strip() == "6"  # keyed by user, like events
    calls = (state / "calls").read_text()
    for topic in ("user-events", "user-events-dlq", "user-refresh"):
        assert f"--create --if-not-exists --topic {topic}" in calls
        assert f"--entity-name {topic} --add-config" in calls  # configs kept current
    assert "retention.ms=86400000" in calls and "compression.type=zstd" in calls


def test_kafka_init_fails_when_a_creation_fails(kafka_bin: Path) -> None:
    done = _kafka_init(kafka_bin, FAIL_CREATE="user-events")
    assert done.returncode != 0
    assert not (kafka_bin.parent / "state" / "user-events-dlq").exists()  # stopped at once


def test_kafka_init_fails_when_a_topic_is_missing(kafka_bin: Path) -> None:
    # The old healthcheck looked only for the DLQ: a silently missing main topic must fail.
    done = _kafka_init(kafka_bin, SKIP_CREATE="user-events")
    assert done.returncode != 0
    assert "user-events" in done.stderr


def test_kafka_init_reports_a_partition_count_it_did_not_apply(kafka_bin: Path) -> None:
    (kafka_bin.parent / "state" / "user-events").write_text("4\n")
    done = _kafka_init(kafka_bin, KAFKA_PARTITIONS="12")
    assert done.returncode == 0, done.stderr
    assert "has 4 partitions, KAFKA_PARTITIONS asks for 12" in done.stderr
    assert "--alter --topic user-events --partitions 12" in done.stderr


def test_kafka_init_gives_up_on_a_broker_that_never_answers(kafka_bin: Path) -> None:
    (kafka_bin.parent / "state" / "broker-up").unlink()
    done = _kafka_init(kafka_bin, KAFKA_INIT_WAIT_S="1")
    assert done.returncode == 1 and "did not answer" in done.stderr


def _sh(script: str, *args: str, env: dict[str, str], shell: str = "sh"):
    return subprocess.run(
        [shell, str(DOCKER / script), *args],
        env={"PATH": os.environ["PATH"]} | env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_secrets_env_turns_files_into_variables(tmp_path: Path) -> None:
    secret = tmp_path / "redis_password"
    secret.write_text("s3cret\n")
    probe = "import os; print(os.environ['APP_PASSWORD'], 'APP_PASSWORD__FILE' in os.environ)"
    done = _sh(
        "secrets-env.sh", sys.executable, "-c", probe,
        env={"APP_PASSWORD__FILE": str(secret), "OTHER": "x"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["s3cret", "False"]


def test_secrets_env_fails_on_a_missing_file(tmp_path: Path) -> None:
    done = _sh("secrets-env.sh", "true", env={"APP_PASSWORD__FILE": str(tmp_path / "nope")})
    assert done.returncode == 1 and "APP_PASSWORD__FILE" in done.stderr


def test_pick_gpu_gives_each_replica_its_own_gpu(tmp_path: Path) -> None:
    env = {"GPU_LOCK_DIR": str(tmp_path), "GPU_COUNT": "2"}
    hold = "import os, sys, time; print(os.environ['CUDA_VISIBLE_DEVICES'], flush=True); " \
        "sys.stdin.read()"  # fmt: skip
    replicas = []
    try:
        for _ in range(2):
            p = subprocess.Popen(
                ["bash", str(DOCKER / "pick-gpu.sh"), sys.executable, "-c", hold],
                env={"PATH": os.environ["PATH"]} | env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            replicas.append(p)
            assert p.stdout.readline().strip() == str(len(replicas) - 1)  # holds its lock
        third = _sh("pick-gpu.sh", "true", env=env, shell="bash")
        assert third.returncode == 1 and "all 2 GPUs are held" in third.stderr
    finally:
        for p in replicas:
            p.communicate("", timeout=30)
    # The replicas exited: their GPUs are free again.
    again = _sh("pick-gpu.sh", "sh", "-c", "echo $CUDA_VISIBLE_DEVICES", env=env, shell="bash")
    assert again.returncode == 0 and again.stdout.strip() == "0"


def test_pick_gpu_keeps_an_operator_choice_and_fails_without_gpus(tmp_path: Path) -> None:
    env = {"GPU_LOCK_DIR": str(tmp_path), "CUDA_VISIBLE_DEVICES": "3"}
    kept = _sh("pick-gpu.sh", "sh", "-c", "echo $CUDA_VISIBLE_DEVICES", env=env, shell="bash")
    assert kept.stdout.strip() == "3"
    none = _sh("pick-gpu.sh", "true", env={"GPU_LOCK_DIR": str(tmp_path), "GPU_COUNT": "0"},
               shell="bash")  # fmt: skip
    assert none.returncode == 1 and "Container Toolkit" in none.stderr


def test_make_secrets_writes_readable_files_in_a_private_directory(tmp_path: Path) -> None:
    out = tmp_path / "secrets"
    done = _sh("make-secrets.sh", str(out), env={}, shell="bash")
    assert done.returncode == 0, done.stderr
    assert out.stat().st_mode & 0o777 == 0o700
    files = {p.name: p for p in out.iterdir()}
    assert set(files) == {"redis_password", "ranker_redis_url", "grafana_admin_password"}
    for p in files.values():
        assert p.stat().st_mode & 0o777 == 0o644  # the containers' own uids read them
    password = files["redis_password"].read_text().strip()
    assert len(password) == 48
    assert files["ranker_redis_url"].read_text().strip() == f"redis://:{password}@redis:6379/0"
    # Kept across runs unless given; a given one is written and the URL follows it.
    assert _sh("make-secrets.sh", str(out), env={}, shell="bash").returncode == 0
    assert files["redis_password"].read_text().strip() == password
    given = _sh("make-secrets.sh", str(out), env={"REDIS_PASSWORD": "secret"}, shell="bash")
    assert given.returncode == 0
    assert files["ranker_redis_url"].read_text().strip() == "redis://:secret@redis:6379/0"
    bad = _sh("make-secrets.sh", str(out), env={"REDIS_PASSWORD": "a@b/c"}, shell="bash")
    assert bad.returncode == 1 and "URL-safe" in bad.stderr


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, DOCKER / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_image_torch_rules() -> None:
    problems = _load("check_image").torch_problems
    # The defect this check exists for: PyPI's CUDA 13.0 torch on a CUDA 12.8 base.
    assert problems("cuda", "2.13.0", "13.0", "12.8.1")
    assert problems("cuda", "2.13.0", "13.0", "13.0.1") == []
    assert problems("cuda", "2.13.0+cu128", "12.8", "13.0.1") == []
    assert problems("cuda", "2.13.0+cpu", None, "13.0.1")
    assert problems("cuda", "2.13.0", "13.0", None)
    assert problems("cpu", "2.13.0+cpu", None, None) == []
    assert problems("cpu", "2.13.0", "13.0", None)  # the CUDA wheel where +cpu was meant
    assert problems("absent", None, None, None) == []
    assert problems("absent", "2.13.0", None, None)


def test_check_image_runs_here() -> None:
    import torch

    kind = "cpu" if torch.version.cuda is None else "cuda"
    done = subprocess.run(
        [sys.executable, str(DOCKER / "check_image.py"), "--torch", kind, "--import", "json"],
        env=os.environ | {"CUDA_VERSION": "99.0"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    failed = subprocess.run(
        [sys.executable, str(DOCKER / "check_image.py"), "--torch", "absent"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert failed.returncode == 1 and "torch" in failed.stderr


def test_requirements_come_from_pyproject() -> None:
    import tomllib

    req = _load("requirements")
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = {req.name_of(r): r for r in doc["project"]["dependencies"]}
    assert req.requirements(doc, only=["torch"], local="cpu") == [pins["torch"] + "+cpu"]
    slim = req.requirements(doc, extras=["loadtest"], without=["torch", "safetensors"])
    assert {req.name_of(r) for r in slim} == (set(pins) - {"torch", "safetensors"}) | {"locust"}
    assert req.name_of("uvicorn[standard]==0.1") == "uvicorn"
    assert req.requirements({"project": {"dependencies": ["a==1.0; python_version>'3'"]}},
                            local="cpu") == ["a==1.0+cpu; python_version>'3'"]  # fmt: skip
    with pytest.raises(SystemExit):
        req.requirements(doc, only=["no-such-package"])
    # The ranker's CMD names uvloop and httptools: the image installs them from pyproject.
    assert {"uvloop", "httptools"} <= set(pins)


def test_seed_reads_the_checkpoint_shape_without_torch(tmp_path: Path) -> None:
    from loadtests.locust.seed import checkpoint_shape
    from loadtests.stack.checkpoints import checkpoint_pair

    pair = checkpoint_pair(tmp_path)
    from shared_model.checkpoint import load_checkpoint

    reference = load_checkpoint(pair.online, stage="online")
    shape = checkpoint_shape(pair.online)
    assert shape.history_length == reference.config.max_seq_len
    assert shape.content_dim == reference.config.content_dim
    assert shape.d_upstream == reference.config.d_upstream
    assert shape.upstream_model_version == reference.metadata["upstream_model_version"]
    with pytest.raises(SystemExit, match="online"):
        checkpoint_shape(pair.upstream)
    probe = textwrap.dedent(f"""
        import sys
        from loadtests.locust.seed import checkpoint_shape
        checkpoint_shape({str(pair.online)!r})
        print(json.dumps(sorted(m for m in ("torch", "safetensors") if m in sys.modules)))
    """).replace("import sys", "import json, sys")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_seed_writes_what_the_ranker_reads(tmp_path: Path) -> None:
    """locust-seed's command against a real redis-server, with the URL from a secret file."""
    import redis

    from loadtests.locust import seed
    from loadtests.locust.traffic import Population
    from loadtests.stack.checkpoints import checkpoint_pair
    from loadtests.stack.servers import RedisServer
    from shared_model.contract import (
        EMBEDDING_FIELD_RECORD,
        SOURCE_ENGAGEMENT,
        SOURCE_IMPRESSION,
        EmbeddingRecord,
        embedding_key,
        history_key,
    )

    pair = checkpoint_pair(tmp_path / "ckpt")
    with RedisServer(password="s3cret") as server:
        url_file = tmp_path / "ranker_redis_url"
        url_file.write_text(server.url + "\n")
        args = ["--redis-url-file", str(url_file), "--checkpoint", str(pair.online)]
        assert seed.main([*args, "--population-users", "10"]) == 0
        population = Population(users=10)
        client = redis.Redis.from_url(server.url)
        try:
            fresh = population.user_id(0)
            record = EmbeddingRecord.decode(
                client.hget(embedding_key(fresh), EMBEDDING_FIELD_RECORD)
            )
            assert record.model_version == pair.upstream_version
            assert (
                client.zcard(history_key(fresh, SOURCE_ENGAGEMENT))
                + client.zcard(history_key(fresh, SOURCE_IMPRESSION))
                == seed.checkpoint_shape(pair.online).history_length
            )
            assert not client.exists(embedding_key(population.user_id(9)))  # a "new" user
        finally:
            client.close()
