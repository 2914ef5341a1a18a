"""Request and event builders: what the load test sends is what the ranker accepts."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from loadtests.locust.traffic import (
    Population,
    RequestMix,
    build_rank_request,
    build_user_event,
    candidate_count,
    seed_redis,
)
from ranker_service.features import check_candidates, check_inline_events, inline_history
from ranker_service.schemas import RankRequest
from ranker_service.settings import Settings
from shared_model.config import online_config, tiny_config
from shared_model.contract import UserEvent, embedding_key


@pytest.mark.parametrize(
    "mix",
    [
        RequestMix(inline_share=0.5),
        RequestMix(min_candidates=1, max_candidates=20, inline_share=1.0, content_dim=32,
                   candidate_floats=4),
    ],
    ids=["content-ids", "dense-content"],
)  # fmt: skip
def test_rank_requests_pass_the_ranker_validation(mix: RequestMix) -> None:
    cfg, settings = online_config(), Settings()
    rng, population = random.Random(0), Population(users=50)
    for _ in range(30):
        body = build_rank_request(rng, population, mix)
        request = RankRequest.model_validate_json(json.dumps(body))  # strict, as the route
        assert len(request.candidates) <= settings.max_candidates
        assert check_candidates(request.candidates, cfg) is None
        if request.events is not None:
            assert len(request.events) <= settings.max_inline_events
            assert check_inline_events(request.events, cfg) is None
            assert inline_history(request.events, request.user_id)


def test_population_mix_and_candidate_counts() -> None:
    rng, population, mix = random.Random(1), Population(users=1000), RequestMix()
    bodies = [build_rank_request(rng, population, mix) for _ in range(2000)]
    kinds = Counter(b["user_id"].split("-")[1] for b in bodies)
    assert set(kinds) == {"fresh", "stale", "new"}
    assert 0.55 < kinds["fresh"] / 2000 < 0.65
    counts = [len(b["candidates"]) for b in bodies]
    assert min(counts) >= 50 and max(counts) <= 500
    assert sorted(counts)[1000] < 275  # log-uniform: the median is below the midpoint
    assert 0.07 < sum("events" in b for b in bodies) / 2000 < 0.13
    assert candidate_count(rng, RequestMix(min_candidates=100, max_candidates=100)) == 100


def test_user_events_round_trip_and_target_known_users() -> None:
    rng, population = random.Random(2), Population(users=100)
    events = [build_user_event(rng, population, i, conversion_share=0.5) for i in range(200)]
    assert all(UserEvent.decode(e.encode()) == e for e in events)
    assert all("-new-" not in e.user_id for e in events)
    assert 60 < sum(e.action_type.name == "CONVERSION" for e in events) < 140


def test_seed_redis_writes_fresh_and_stale_users(redis_client) -> None:
    cfg = tiny_config()
    population = Population(users=10, ads=20)
    counts = seed_redis(
        redis_client, population, history_length=cfg.max_seq_len, content_dim=cfg.content_dim,
        d_upstream=cfg.d_upstream, upstream_model_version="v-test",
    )  # fmt: skip
    assert counts == {"users": 8, "events": 8 * 16, "embeddings": 8, "content": 20}
    assert redis_client.exists(embedding_key(population.user_id(0)))
    assert not redis_client.exists(embedding_key(population.user_id(9)))
