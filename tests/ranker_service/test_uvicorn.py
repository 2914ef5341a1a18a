"""`uvicorn ranker_service.main:app` configured only through RANKER_* variables."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import redis

from loadtests.stack.servers import LOOPBACK, RedisServer, ServiceProcess, free_port
from shared_model.config import LLaTTEConfig
from tests.ranker_service.helpers import rank_body, write_embedding


@pytest.mark.slow
def test_uvicorn_serves_from_env(
    redis_server: RedisServer,
    redis_client: redis.Redis,
    checkpoint_dir: Path,
    tiny_cfg: LLaTTEConfig,
) -> None:
    port = free_port()
    env = {
        "RANKER_REDIS_URL": redis_server.url,
        "RANKER_CHECKPOINT_PATH": str(checkpoint_dir),
        "RANKER_MAX_CANDIDATES": "4",
        "RANKER_EMBEDDING_MAX_AGE_S": "1e12",  # the test records are dated in the past
    }
    base = f"http://{LOOPBACK}:{port}"
    with ServiceProcess(
        "uvicorn", "ranker_service.main:app", "--host", LOOPBACK, "--port", str(port), env=env
    ) as service:
        service.wait_ready(f"{base}/readyz", timeout=60)
        write_embedding(redis_client, "u1", [0.1] * tiny_cfg.d_upstream)
        with httpx.Client(base_url=base, trust_env=False, timeout=30) as client:
            ok = client.post("/v1/rank", json=rank_body(3, tiny_cfg))
            assert ok.status_code == 200, ok.text
            assert ok.json()["upstream"]["status"] == "used"
            assert "model;dur=" in ok.headers["server-timing"]
            too_many = client.post("/v1/rank", json=rank_body(5, tiny_cfg))
            assert too_many.status_code == 422
            assert "max_candidates=4" in too_many.text
