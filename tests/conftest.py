"""Session-wide real servers: one redis-server and one Tansu broker for the whole run."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import redis

    from loadtests.stack.servers import KafkaBroker, RedisServer

# kafka-python 3.0 reads its protocol specs through the deprecated importlib.resources API; the
# warning is attributed to importlib, so pyproject's `kafka.*` filter misses it.
# loadtests.stack.servers (which imports kafka) is therefore imported inside the fixtures,
# after these filters apply.
_KAFKA_IMPORT_WARNINGS = ("open_text is deprecated", "read_text is deprecated")


def _interrupt_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # pytest runs fixture teardown on KeyboardInterrupt, so a CI timeout's SIGTERM still
    # stops every server instead of orphaning it.
    raise KeyboardInterrupt(f"received signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    for message in _KAFKA_IMPORT_WARNINGS:
        config.addinivalue_line("filterwarnings", f"ignore:{message}:DeprecationWarning")
    if sys.platform != "win32" and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt_on_sigterm)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server on a free port (never the developer's 6379)."""
    from loadtests.stack.servers import REDIS_INSTALL_HINT, RedisServer, redis_server_binary

    try:
        redis_server_binary()
    except RuntimeError:
        pytest.fail(f"{REDIS_INSTALL_HINT} (or `make system-deps`)", pytrace=False)
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client on the session redis, emptied before each test."""
    redis_server.start()  # no-op unless an earlier test left it stopped
    client = redis_server.client()
    client.flushall()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    """A private in-memory Tansu broker on a free port, shared by the whole session."""
    from loadtests.stack.servers import KafkaBroker

    with KafkaBroker() as broker:
        yield broker
