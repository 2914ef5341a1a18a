"""Health, readiness, metrics, docs, a hung Redis, the lookup switch, and hot reload."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis
import torch
from fastapi.testclient import TestClient

from loadtests.stack.polling import wait_for
from loadtests.stack.servers import LOOPBACK, RedisServer
from ranker_service.main import create_app
from shared_model.config import LLaTTEConfig
from tests.ranker_service.helpers import rank_body, ranker_settings, write_embedding


def _vector(cfg: LLaTTEConfig) -> list[float]:
    return torch.ones(cfg.d_upstream).tolist()


def test_health_ready_docs(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "alive"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True and ready.json()["model_version"].startswith("online-")
    assert client.get("/docs").status_code == 200
    assert "/v1/rank" in client.get("/openapi.json").json()["paths"]


def test_metrics_exposition(
    client: TestClient, redis_client: redis.Redis, tiny_cfg: LLaTTEConfig
) -> None:
    write_embedding(redis_client, "u1", _vector(tiny_cfg))
    assert client.post("/v1/rank", json=rank_body(3, tiny_cfg)).status_code == 200
    text = client.get("/metrics").text
    for name in (
        'ranker_request_duration_seconds_bucket{le="0.012",outcome="ok"}',
        "ranker_model_duration_seconds_count",
        'ranker_redis_duration_seconds_count{outcome="ok"}',
        'ranker_candidates_per_request_bucket{le="5.0"}',
        'ranker_embedding_lookups_total{outcome="hit"}',
        "ranker_embedding_age_seconds_count",
        "ranker_requests_in_flight 0.0",
        "ranker_model_info{",
        'precision="float32"',
    ):
        assert name in text, name


def test_hung_redis_times_out_within_budget(
    blackhole_port: int, checkpoint_dir: Path, tiny_cfg: LLaTTEConfig
) -> None:
    settings = ranker_settings(
        f"redis://{LOOPBACK}:{blackhole_port}/0", checkpoint_dir, redis_budget_ms=50
    )
    with TestClient(create_app(settings)) as client:
        for _ in range(2):
            response = client.post("/v1/rank", json=rank_body(2, tiny_cfg))
            assert response.status_code == 200, response.text
            out = response.json()
            assert out["upstream"]["outcome"] == "timeout"
            assert out["history_source"] == "none"
        assert client.get("/readyz").status_code == 503
        assert 'ranker_redis_duration_seconds_count{outcome="timeout"} 2.0' in (
            client.get("/metrics").text
        )


def test_lookup_switched_off(
    redis_server: RedisServer,
    redis_client: redis.Redis,
    checkpoint_dir: Path,
    tiny_cfg: LLaTTEConfig,
) -> None:
    write_embedding(redis_client, "u1", _vector(tiny_cfg))
    settings = ranker_settings(redis_server.url, checkpoint_dir, upstream_lookup_enabled=False)
    with TestClient(create_app(settings)) as client:
        out = client.post("/v1/rank", json=rank_body(2, tiny_cfg)).json()
    assert out["upstream"]["status"] == "absent"
    assert out["upstream"]["outcome"] == "disabled"
    assert out["history_source"] == "redis"


def test_reload_is_protected(client: TestClient) -> None:
    assert client.post("/admin/reload").status_code == 401
    wrong = client.post("/admin/reload", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401


def test_reload_disabled_without_token(
    redis_server: RedisServer, redis_client: redis.Redis, checkpoint_dir: Path
) -> None:
    settings = ranker_settings(redis_server.url, checkpoint_dir, reload_token=None)
    with TestClient(create_app(settings)) as client:
        response = client.post("/admin/reload", headers={"Authorization": "Bearer x"})
    assert response.status_code == 404


def test_reload_swaps_model_without_dropping_requests(
    redis_server: RedisServer,
    redis_client: redis.Redis,
    checkpoint_dir: Path,
    second_checkpoint_dir: Path,
    tiny_cfg: LLaTTEConfig,
) -> None:
    # one inference thread: holding it below holds every model call
    settings = ranker_settings(redis_server.url, checkpoint_dir, inference_threads=1)
    auth = {"Authorization": "Bearer test-token"}
    with TestClient(create_app(settings)) as client:
        old = client.post("/v1/rank", json=rank_body(3, tiny_cfg)).json()["model_version"]

        bad = client.post(
            "/admin/reload", json={"checkpoint_path": "/nonexistent/ckpt"}, headers=auth
        )
        assert bad.status_code == 422 and "checkpoint file missing" in bad.text
        assert client.get("/readyz").json()["model_version"] == old  # still serving

        def rank_once(_: int) -> tuple[int, str]:
            r = client.post("/v1/rank", json=rank_body(3, tiny_cfg))
            return r.status_code, r.json()["model_version"]

        # Hold the inference thread, so requests that took the old model queue for it while
        # the reload runs: the overlap is forced, not hoped for.
        state = client.app.state.ranker
        release, held = threading.Event(), threading.Event()
        state.runner.executor.submit(lambda: (held.set(), release.wait(60)))
        wait_for(held.is_set, timeout=10, what="the inference thread is held")
        with ThreadPoolExecutor(4) as pool:
            try:
                during = [pool.submit(rank_once, i) for i in range(4)]
                wait_for(
                    lambda: state.ranking.batcher.pending >= 4,
                    timeout=30,
                    what="4 requests queued for the held model thread",
                )
                reload = client.post(
                    "/admin/reload",
                    json={"checkpoint_path": str(second_checkpoint_dir)},
                    headers=auth,
                )
            finally:
                release.set()
            results = [f.result() for f in during]
        assert reload.status_code == 200, reload.text
        new = reload.json()["model_version"]
        assert new != old and reload.json()["previous_model_version"] == old
        # Requests in flight during the reload finish on the model they started with.
        assert results == [(200, old)] * 4
        after = client.post("/v1/rank", json=rank_body(3, tiny_cfg)).json()
        assert after["model_version"] == new
        assert f'model_version="{new}"' in client.get("/metrics").text
