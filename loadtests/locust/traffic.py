"""What the load test sends: a user population, ``POST /v1/rank`` bodies and Kafka user events.

The population has three kinds of users, told apart by their id so that a running stack needs
no side channel to know which is which:

* ``{prefix}-fresh-{i}``: a stored history and a recent upstream embedding (outcome ``hit``);
* ``{prefix}-stale-{i}``: a stored history and an embedding older than the ranker's
  ``embedding_max_age_s`` (outcome ``stale``, until a conversion makes the upstream refresh it);
* ``{prefix}-new-{i}``: never seen: no history, no embedding (outcome ``missing``).

``seed_redis`` writes the first two kinds with the contract encoders (the same bytes the
upstream worker writes). Request bodies vary the candidate count (log-uniform, 50-500 by
default), surface, device and request time, and a share carries inline recent events.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass
from typing import Any

import redis

from shared_model.contract import (
    EMBEDDING_FIELD_NEWEST,
    EMBEDDING_FIELD_RECORD,
    ActionType,
    EmbeddingRecord,
    HistoryRecord,
    UserEvent,
    content_embedding_key,
    embedding_key,
    history_key,
    source_of,
    stable_hash,
)

log = logging.getLogger(__name__)

SURFACES = ("feed", "reels", "search", "stories")
DEVICES = ("ios", "android", "web")
INLINE_ACTIONS = ("impression", "view", "click", "conversion")
DAY_MS = 24 * 3600 * 1000
STALE_AGE_MS = 30 * DAY_MS  # well past the ranker's default embedding_max_age_s (7 days)
CONTENT_MODEL = "loadtest-content-v1"
RANK_NAME = "/v1/rank"  # Locust request names (rows of the stats CSV)
KAFKA_NAME = "kafka user-events"


@dataclass(frozen=True)
class Population:
    users: int = 1000  # distinct user ids
    fresh_share: float = 0.6  # with a history and a fresh embedding
    stale_share: float = 0.2  # with a history and a stale embedding; the rest never seen
    prefix: str = "lt"
    ads: int = 5000  # ad catalogue size (ad ids, content ids)
    advertisers: int = 300

    def __post_init__(self) -> None:
        if self.users < 1 or not (0 <= self.fresh_share + self.stale_share <= 1):
            raise ValueError("need users >= 1 and fresh_share + stale_share <= 1")

    @property
    def n_fresh(self) -> int:
        return round(self.users * self.fresh_share)

    @property
    def n_stale(self) -> int:
        return round(self.users * self.stale_share)

    def user_id(self, index: int) -> str:
        if index < self.n_fresh:
            return f"{self.prefix}-fresh-{index}"
        if index < self.n_fresh + self.n_stale:
            return f"{self.prefix}-stale-{index}"
        return f"{self.prefix}-new-{index}"

    def known_user_ids(self) -> list[str]:
        """Users with a stored history (fresh and stale)."""
        return [self.user_id(i) for i in range(self.n_fresh + self.n_stale)]


@dataclass(frozen=True)
class RequestMix:
    min_candidates: int = 50
    max_candidates: int = 500  # drawn log-uniformly in [min, max]; equal bounds fix N
    inline_share: float = 0.1  # share of requests that carry their recent events inline
    min_inline_events: int = 10
    max_inline_events: int = 200
    # >0: send dense content vectors of this width (must be the model's content_dim);
    # 0: send content ids, which the ranker looks up in Redis.
    content_dim: int = 0
    candidate_floats: int = 0  # >0: send this many float features (the model's count)
    bid_share: float = 0.5  # share of candidates with a bid


def candidate_count(rng: random.Random, mix: RequestMix) -> int:
    lo, hi = mix.min_candidates, mix.max_candidates
    if lo >= hi:
        return lo
    return min(hi, int(math.exp(rng.uniform(math.log(lo), math.log(hi + 1)))))


def build_rank_request(
    rng: random.Random, population: Population, mix: RequestMix, now_ms: int | None = None
) -> dict[str, Any]:
    """One ``POST /v1/rank`` JSON body for a random user of the population."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    user = population.user_id(rng.randrange(population.users))
    context: dict[str, Any] = {"surface": rng.choice(SURFACES), "device": rng.choice(DEVICES)}
    if rng.random() < 0.5:
        context["time_ms"] = now_ms - rng.randrange(0, 2000)  # client clocks a little behind
    candidates = []
    for _ in range(candidate_count(rng, mix)):
        ad = rng.randrange(population.ads)
        c: dict[str, Any] = {
            "ad_id": f"ad-{ad}",
            "advertiser_id": f"adv-{ad % population.advertisers}",
        }
        if mix.content_dim:
            c["content_embedding"] = [round(rng.gauss(0, 1), 3) for _ in range(mix.content_dim)]
        else:
            c["content_id"] = f"ad-{ad}"
        if mix.candidate_floats:
            c["floats"] = [round(rng.random(), 4) for _ in range(mix.candidate_floats)]
        if rng.random() < mix.bid_share:
            c["bid"] = round(rng.uniform(0.1, 5.0), 2)
        candidates.append(c)
    body: dict[str, Any] = {"user_id": user, "context": context, "candidates": candidates}
    if rng.random() < mix.inline_share:
        n = rng.randint(mix.min_inline_events, mix.max_inline_events)
        start = now_ms - n * 30_000
        body["events"] = [
            {
                "timestamp_ms": start + 30_000 * i,
                "action_type": rng.choice(INLINE_ACTIONS),
                "item_id": f"ad-{rng.randrange(population.ads)}",
                "surface": rng.choice(SURFACES),
            }
            for i in range(n)
        ]
    return body


def build_user_event(
    rng: random.Random,
    population: Population,
    seq: int,
    conversion_share: float = 0.1,
    now_ms: int | None = None,
) -> UserEvent:
    """One Kafka user event for a known (fresh or stale) user, stamped now."""
    known = population.n_fresh + population.n_stale
    user = population.user_id(rng.randrange(known)) if known else population.user_id(0)
    if rng.random() < conversion_share:
        action = ActionType.CONVERSION
    else:
        action = rng.choice([ActionType.IMPRESSION, ActionType.VIEW, ActionType.CLICK])
    return UserEvent(
        event_id=f"{population.prefix}-ev-{rng.getrandbits(32):08x}-{seq}",
        user_id=user,
        timestamp_ms=int(time.time() * 1000) if now_ms is None else now_ms,
        action_type=action,
        item_id=f"ad-{rng.randrange(population.ads)}",
        surface=rng.choice(SURFACES),
    )


# ------------------------------------------------------------------------------------------
# Seeding Redis
# ------------------------------------------------------------------------------------------


def _vector(rng: random.Random, dim: int) -> tuple[float, ...]:
    return tuple(rng.gauss(0.0, 1.0) for _ in range(dim))


def seed_redis(
    client: redis.Redis,
    population: Population,
    *,
    history_length: int,
    content_dim: int,
    d_upstream: int,
    upstream_model_version: str,
    seed: int = 0,
    now_ms: int | None = None,
) -> dict[str, int]:
    """Write histories, upstream embeddings and the ad catalogue's content vectors.

    Args:
        history_length: events per known user (split between the two history sources).
        content_dim: width of content vectors (0: none written).
        d_upstream: width of the upstream embedding (the ranker's ``d_upstream``).
        upstream_model_version: the version the ranker expects, else every lookup is a
            ``version_mismatch``.

    Returns:
        counts of what was written.
    """
    rng = random.Random(seed)
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    actions = list(ActionType)
    feed = stable_hash("feed")
    written = {"users": 0, "events": 0, "embeddings": 0, "content": 0}
    for index in range(population.n_fresh + population.n_stale):
        user = population.user_id(index)
        pipe = client.pipeline(transaction=False)
        by_source: dict[str, dict[bytes, int]] = {}
        for i in range(history_length):
            ts = now_ms - 60_000 * (history_length - i)
            record = HistoryRecord(
                timestamp_ms=ts,
                action_type=actions[(i + index) % len(actions)],
                item_hash=stable_hash(f"ad-{rng.randrange(population.ads)}"),
                surface_hash=feed,
                event_hash=rng.getrandbits(62),
                value=1.0,
                content=_vector(rng, content_dim) if content_dim else None,
            )
            by_source.setdefault(source_of(record.action_type), {})[record.encode()] = ts
        for source, members in by_source.items():
            pipe.zadd(history_key(user, source), members)
        computed = now_ms - (60_000 if index < population.n_fresh else STALE_AGE_MS)
        record = EmbeddingRecord(
            _vector(rng, d_upstream), upstream_model_version, computed, computed - 1000,
            history_length,
        )  # fmt: skip
        pipe.hset(
            embedding_key(user),
            mapping={EMBEDDING_FIELD_RECORD: record.encode(), EMBEDDING_FIELD_NEWEST: computed},
        )
        pipe.execute()
        written["users"] += 1
        written["events"] += history_length
        written["embeddings"] += 1
    if content_dim:
        for start in range(0, population.ads, 500):
            pipe = client.pipeline(transaction=False)
            for ad in range(start, min(population.ads, start + 500)):
                vec = EmbeddingRecord(_vector(rng, content_dim), CONTENT_MODEL, now_ms, now_ms, 0)
                pipe.set(content_embedding_key(f"ad-{ad}"), vec.encode())
            pipe.execute()
        written["content"] = population.ads
    log.info("seeded redis: %s", written)
    return written
