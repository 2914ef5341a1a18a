"""Real multi-process stacks: a local Redis Cluster (or one redis-server), Tansu, workers and
rankers as processes (loadtests.stack.local_stack), plus the traffic helpers the tests share."""

from __future__ import annotations

import itertools
import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from kafka import KafkaProducer

from loadtests.stack.checkpoints import CheckpointPair, checkpoint_pair
from loadtests.stack.local_stack import EVENTS_TOPIC, LocalStack
from shared_model.config import tiny_config
from shared_model.contract import EmbeddingRecord, UserEvent
from upstream_service.embedding_store import EmbeddingStore
from upstream_service.history_store import HistoryStore
from upstream_service.redis_client import REDIS_ERRORS

_event_ids = itertools.count()
# Small batches and waits: a refresh lands within a poll or two on a busy 2-core box.
UPSTREAM_ENV = {"UPSTREAM_BATCH_MAX_SIZE": "8", "UPSTREAM_BATCH_MAX_WAIT_MS": "20"}
# Generous: a loaded box must not turn a hit into a timeout (the timeout path has its own tests).
RANKER_ENV = {"RANKER_REDIS_TIMEOUT_MS": "1000", "RANKER_WARMUP_CANDIDATES": "[1]"}


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> CheckpointPair:
    return checkpoint_pair(tmp_path_factory.mktemp("cluster-ckpt"))


def conversion_wave(users: Sequence[str], ts_ms: int, clicks: int = 2) -> list[UserEvent]:
    """Per user: ``clicks`` clicks then a conversion (the refresh trigger), all at ts_ms + i."""
    events = []
    for user in users:
        for i, action in enumerate(["click"] * clicks + ["conversion"]):
            events.append(
                UserEvent(
                    event_id=f"ev-{next(_event_ids)}-{uuid.uuid4().hex[:8]}",
                    user_id=user,
                    timestamp_ms=ts_ms + i,
                    action_type=action,
                    item_id=f"item-{i}",
                )
            )
    return events


def publish(stack: LocalStack, events: Sequence[UserEvent]) -> None:
    """Publish keyed by user and wait for every broker ack."""
    producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, enable_idempotence=False)
    try:
        futures = [producer.send(EVENTS_TOPIC, key=e.kafka_key(), value=e.encode()) for e in events]
        producer.flush(timeout=30)
        for future in futures:
            future.get(timeout=30)
    finally:
        producer.close(timeout=5)


def embeddings(
    stack: LocalStack, users: Sequence[str], model_version: str
) -> dict[str, EmbeddingRecord | None]:
    client = stack.redis_client()
    try:
        store = EmbeddingStore(client)
        return {user: store.read(user, model_version) for user in users}
    finally:
        client.close()


def history_lengths(stack: LocalStack, users: Sequence[str]) -> dict[str, int]:
    client = stack.redis_client()
    try:
        store = HistoryStore(client, {"eng": 10_000, "imp": 10_000})
        return {h.user_id: len(h.records) for h in store.load(users, 10_000)}
    finally:
        client.close()


def all_fresh(stack: LocalStack, users: Sequence[str], newest_ms: int, model_version: str) -> bool:
    """Every user holds a ``model_version`` embedding that saw an event at or after
    ``newest_ms``."""
    try:
        records = embeddings(stack, users, model_version)
    except REDIS_ERRORS:  # mid-failover: not yet
        return False
    return all(r is not None and r.newest_event_ms >= newest_ms for r in records.values())


def rank_body(user_id: str, candidates: int = 3) -> dict:
    cfg = tiny_config("online")
    return {
        "user_id": user_id,
        "context": {"surface": "feed", "device": "ios"},
        "candidates": [
            {
                "ad_id": f"ad-{i}",
                "advertiser_id": f"adv-{i % 2}",
                "content_embedding": [0.01 * (i + j) for j in range(cfg.content_dim)],
                "floats": [0.1 * (i + 1)] * cfg.n_candidate_floats,
            }
            for i in range(candidates)
        ],
    }


def post_rank(base_url: str, body: dict, timeout: float = 10.0) -> tuple[int, dict | None]:
    """(status, JSON body or None); a refused connection is status 0."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(
        f"{base_url}/v1/rank",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, None
    except (urllib.error.URLError, OSError):
        return 0, None


@dataclass
class RankingTraffic:
    """Ranking requests in a background thread, round-robin over users, every answer kept."""

    base_url: str
    users: Sequence[str]
    answers: list[tuple[float, int, bool]] = field(default_factory=list)  # (t, status, used)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> RankingTraffic:
        self._thread = threading.Thread(target=self._run, name="rank-traffic", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        for user in itertools.cycle(self.users):
            if self._stop.is_set():
                return
            status, body = post_rank(self.base_url, rank_body(user))
            used = bool(body) and body["upstream"]["status"] == "used"
            self.answers.append((time.monotonic(), status, used))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
