"""Ranker fixtures: tiny checkpoints and the app on the session redis-server."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from loadtests.stack.servers import LOOPBACK, RedisServer
from ranker_service.main import create_app
from shared_model.config import LLaTTEConfig, tiny_config
from tests.ranker_service.helpers import make_checkpoint, ranker_settings


@pytest.fixture(scope="session")
def tiny_cfg() -> LLaTTEConfig:
    return tiny_config("online")


@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ranker-ckpt") / "online"
    make_checkpoint(path, seed=0)
    return path


@pytest.fixture(scope="session")
def second_checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ranker-ckpt2") / "online"
    make_checkpoint(path, seed=1)
    return path


@pytest.fixture(scope="module")
def app_client(redis_server: RedisServer, checkpoint_dir: Path) -> Iterator[TestClient]:
    """The real app (lifespan, model load, warm-up) on the session redis-server."""
    app = create_app(ranker_settings(redis_server.url, checkpoint_dir))
    with TestClient(app) as client:
        yield client


@pytest.fixture
def client(app_client: TestClient, redis_client: redis.Redis) -> TestClient:
    """The module's app, with redis running and emptied for this test."""
    return app_client


@pytest.fixture
def blackhole_port() -> Iterator[int]:
    """A TCP port that accepts connections and never answers: a hung Redis."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((LOOPBACK, 0))
    sock.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
                accepted.append(conn)  # hold it open, read nothing, write nothing
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        sock.close()
