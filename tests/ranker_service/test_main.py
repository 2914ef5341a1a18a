"""`python -m ranker_service`: the ranker under uvicorn with uvloop and httptools."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from loadtests.stack.servers import LOOPBACK, RedisServer, ServiceProcess, free_port
from ranker_service.__main__ import UVICORN_FLAGS, UVICORN_OPTIONS
from shared_model.config import LLaTTEConfig
from tests.ranker_service.helpers import rank_body


def test_flags_and_options_agree() -> None:
    expected = ("--loop", UVICORN_OPTIONS["loop"], "--http", UVICORN_OPTIONS["http"])
    assert (*expected, "--no-access-log") == UVICORN_FLAGS
    import httptools  # noqa: F401  (both are dependencies: uvicorn would fail without them)
    import uvloop  # noqa: F401


@pytest.mark.slow
def test_python_m_ranker_service_serves(
    redis_server: RedisServer, checkpoint_dir: Path, tiny_cfg: LLaTTEConfig
) -> None:
    port = free_port()
    env = {"RANKER_REDIS_URL": redis_server.url, "RANKER_CHECKPOINT_PATH": str(checkpoint_dir)}
    base = f"http://{LOOPBACK}:{port}"
    with ServiceProcess(
        "ranker_service", "--host", LOOPBACK, "--port", str(port), env=env
    ) as service:
        service.wait_ready(f"{base}/readyz", timeout=60)
        with httpx.Client(base_url=base, trust_env=False, timeout=30) as client:
            out = client.post("/v1/rank", json=rank_body(3, tiny_cfg))
            assert out.status_code == 200, out.text
            assert len(out.json()["candidates"]) == 3
            assert {d["feature"] for d in out.json()["degraded"]} == {"history", "embedding"}
