"""RANKER_TRACED: the ranker scores with recorded graphs by default, recorded at warm-up,
and answers as the eager model does."""

from __future__ import annotations

from pathlib import Path

import torch

from ranker_service.model_runner import load_bundle
from ranker_service.settings import Settings
from shared_model.inference import score, score_many
from shared_model.traced import TracedScorer
from tests.ranker_service.helpers import ranker_settings
from tests.shared_model.helpers import (
    random_candidates,
    random_context,
    random_events,
    random_upstream,
)

NO_REDIS = "redis://127.0.0.1:1"


def _requests(cfg, count: int, seed: int) -> list:
    """``count`` one-user requests with histories of unequal lengths."""
    torch.manual_seed(seed)
    return [
        (
            random_events(cfg, [cfg.max_seq_len - g]),
            random_context(1),
            random_candidates(cfg, 5 + g),
            random_upstream(cfg, 1),
        )
        for g in range(count)
    ]


def test_a_float32_bundle_records_its_usual_graphs_at_warm_up(checkpoint_dir: Path) -> None:
    bundle = load_bundle(checkpoint_dir, ranker_settings(NO_REDIS, checkpoint_dir))
    assert isinstance(bundle.traced, TracedScorer) and bundle.traced.model is bundle.model
    # one user with one and with several candidates; two users, equal and unequal histories
    assert bundle.traced.graphs >= 4
    recorded = bundle.traced.graphs
    requests = _requests(bundle.config, 3, seed=0)
    got = bundle.traced.score_many(requests)
    for g, want in zip(got, score_many(bundle.model, requests), strict=True):
        assert (g - want).abs().max() <= 1e-5
    got = bundle.traced.score(*requests[0])
    assert (got - score(bundle.model, *requests[0])).abs().max() <= 1e-5
    assert bundle.traced.graphs == recorded  # live shapes replayed what warm-up recorded


def test_the_setting_turns_it_off(checkpoint_dir: Path, monkeypatch) -> None:
    assert Settings().traced is True
    monkeypatch.setenv("RANKER_TRACED", "false")
    assert Settings().traced is False
    off = ranker_settings(NO_REDIS, checkpoint_dir, traced=False)
    assert load_bundle(checkpoint_dir, off).traced is None


def test_a_bf16_bundle_records_bf16_graphs_and_answers_as_its_eager_model(
    checkpoint_dir: Path,
) -> None:
    bundle = load_bundle(checkpoint_dir, ranker_settings(NO_REDIS, checkpoint_dir, autocast="bf16"))
    assert bundle.autocast_dtype == torch.bfloat16 and bundle.traced is not None
    assert bundle.traced.graphs >= 4  # recorded at warm-up, in bf16
    bf16, requests = torch.bfloat16, _requests(bundle.config, 2, seed=1)
    got = bundle.traced.score_many(requests, bf16)
    for g, want in zip(got, score_many(bundle.model, requests, autocast_dtype=bf16), strict=True):
        assert (g - want).abs().max() <= 1e-5
