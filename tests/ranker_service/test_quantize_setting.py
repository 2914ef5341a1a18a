"""RANKER_QUANTIZE: float32 by default; int8 reaches the loaded model, its recorded graphs
and its warm-up, and settings it cannot serve are refused at startup."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from ranker_service.main import create_app
from ranker_service.model_runner import load_bundle
from ranker_service.settings import Settings
from shared_model.inference import score_many
from tests.ranker_service.helpers import rank_body, ranker_settings, write_embedding
from tests.shared_model.helpers import (
    random_candidates,
    random_context,
    random_events,
    random_upstream,
)

NO_REDIS = "redis://127.0.0.1:1"
DYNAMIC_LINEAR = torch.ao.nn.quantized.dynamic.Linear


def test_float32_is_the_default_and_the_environment_sets_int8(monkeypatch) -> None:
    assert Settings().quantize == "none"
    monkeypatch.setenv("RANKER_QUANTIZE", "int8")
    assert Settings().quantize == "int8"
    monkeypatch.setenv("RANKER_QUANTIZE", "int4")
    with pytest.raises(ValueError, match="quantize"):
        Settings()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"autocast": "bf16"}, "set autocast=none"),
        ({"autocast": "auto"}, "set autocast=none"),
        ({"device": "cuda"}, "CPU only"),
    ],
)
def test_int8_with_what_it_cannot_combine_with_is_refused(extra, message) -> None:
    with pytest.raises(ValueError, match=message):
        Settings(quantize="int8", **extra)


def test_an_int8_bundle_scores_with_int8_graphs_close_to_float32(checkpoint_dir: Path) -> None:
    int8 = load_bundle(checkpoint_dir, ranker_settings(NO_REDIS, checkpoint_dir, quantize="int8"))
    fp32 = load_bundle(checkpoint_dir, ranker_settings(NO_REDIS, checkpoint_dir))
    assert (int8.precision, fp32.precision) == ("int8", "float32")
    assert int8.autocast_dtype is None
    ffn = int8.model.get_submodule("sequence.layers.0.ffn.w1")
    assert isinstance(ffn, DYNAMIC_LINEAR)
    assert type(fp32.model.get_submodule("sequence.layers.0.ffn.w1")) is torch.nn.Linear
    assert int8.traced is not None and int8.traced.model is int8.model
    assert int8.traced.graphs >= 4  # recorded at warm-up, from the int8 model
    recorded = int8.traced.graphs

    torch.manual_seed(0)
    cfg = int8.config
    requests = [
        (
            random_events(cfg, [cfg.max_seq_len - g]),
            random_context(1),
            random_candidates(cfg, 6 + g),
            random_upstream(cfg, 1),
        )
        for g in range(2)
    ]
    got = int8.traced.score_many(requests)
    for g, eager, reference in zip(
        got, score_many(int8.model, requests), score_many(fp32.model, requests), strict=True
    ):
        assert (g - eager).abs().max() <= 1e-5  # the graph replays the int8 model
        assert (g - reference).abs().max() < 0.03  # which stays near float32
    assert int8.traced.graphs == recorded


def test_an_int8_ranker_ranks_over_http_and_says_so_on_metrics(
    redis_server, redis_client, checkpoint_dir: Path, tiny_cfg
) -> None:
    write_embedding(redis_client, "u1", [0.5] * tiny_cfg.d_upstream)
    body = rank_body(4, tiny_cfg)
    answers = {}
    for quantize in ("none", "int8"):
        settings = ranker_settings(redis_server.url, checkpoint_dir, quantize=quantize)
        with TestClient(create_app(settings)) as client:
            response = client.post("/v1/rank", json=body)
            assert response.status_code == 200, response.text
            answers[quantize] = {
                r["ad_id"]: (r["p_ctr"], r["p_cvr"]) for r in response.json()["candidates"]
            }
            precision = "int8" if quantize == "int8" else "float32"
            assert f'precision="{precision}"' in client.get("/metrics").text
    assert answers["int8"].keys() == answers["none"].keys()
    diffs = [
        abs(a - b)
        for ad, probs in answers["int8"].items()
        for a, b in zip(probs, answers["none"][ad], strict=True)
    ]
    assert 0 < max(diffs) < 0.03  # scored in int8, close to float32
