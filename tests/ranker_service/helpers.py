"""Ranker test helpers: tiny checkpoints, settings, and Redis writers using the contract."""

from __future__ import annotations

import functools
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest
import redis
import torch

from loadtests.stack.checkpoints import random_checkpoint
from loadtests.stack.servers import LOOPBACK
from ranker_service.settings import Settings
from shared_model.checkpoint import Checkpoint, load_checkpoint
from shared_model.config import LLaTTEConfig, tiny_config
from shared_model.contract import (
    EMBEDDING_FIELD_NEWEST,
    EMBEDDING_FIELD_RECORD,
    ActionType,
    EmbeddingDType,
    EmbeddingRecord,
    HistoryRecord,
    content_embedding_key,
    embedding_key,
    history_key,
    source_of,
    stable_hash,
)
from shared_model.features import Candidates, Context, EventBatch, UpstreamFeature
from shared_model.inference import score

UPSTREAM_VERSION = "upstream-test-v1"
NOW_MS = 1_750_000_000_000  # fixed request time: ages are exact


def make_checkpoint(path: Path, seed: int, upstream_version: str = UPSTREAM_VERSION) -> str:
    return random_checkpoint(
        path, tiny_config("online"), seed=seed, upstream_model_version=upstream_version
    )


def ranker_settings(redis_url: str, checkpoint: Path, **overrides: object) -> Settings:
    base: dict[str, object] = dict(
        redis_url=redis_url,
        checkpoint_path=checkpoint,
        # Generous: a loaded CI box must never turn a hit into a timeout. The timeout path is
        # tested against a server that never answers, not against a tight budget.
        redis_budget_ms=2000,
        warmup_candidates=[1, 3],
        max_candidates=50,
        max_inline_events=20,
        max_body_bytes=64 * 1024,
        embedding_max_age_s=3600,
        reload_token="test-token",
    )
    base.update(overrides)
    return Settings(**base)


# ------------------------------------------------------------------------------------------
# Writers that use the contract encoders, as the upstream service does
# ------------------------------------------------------------------------------------------


def write_embedding(
    client: redis.Redis,
    user_id: str,
    vector: Sequence[float],
    *,
    model_version: str = UPSTREAM_VERSION,
    computed_at_ms: int = NOW_MS - 60_000,
    dtype: EmbeddingDType = EmbeddingDType.FLOAT16,
) -> EmbeddingRecord:
    record = EmbeddingRecord(
        vector=tuple(vector),
        model_version=model_version,
        computed_at_ms=computed_at_ms,
        newest_event_ms=computed_at_ms - 1000,
        history_length=10,
        dtype=dtype,
    )
    client.hset(
        embedding_key(user_id),
        mapping={
            EMBEDDING_FIELD_RECORD: record.encode(),
            EMBEDDING_FIELD_NEWEST: record.newest_event_ms,
        },
    )
    return EmbeddingRecord.decode(record.encode())  # what the ranker will read (float16)


def make_history(n: int, content_dim: int, seed: int = 0) -> list[HistoryRecord]:
    g = torch.Generator().manual_seed(seed)
    actions = [ActionType.CLICK, ActionType.VIEW, ActionType.CONVERSION, ActionType.IMPRESSION]
    return [
        HistoryRecord(
            timestamp_ms=NOW_MS - 3_600_000 + 60_000 * i,
            action_type=actions[i % len(actions)],
            item_hash=stable_hash(f"item-{i % 7}"),
            surface_hash=stable_hash("feed"),
            event_hash=stable_hash(f"event-{seed}-{i}"),
            value=float(i % 3),
            content=tuple(torch.randn(content_dim, generator=g).tolist()) if i % 2 else None,
        )
        for i in range(n)
    ]


def write_history(client: redis.Redis, user_id: str, records: Sequence[HistoryRecord]) -> None:
    for r in records:
        client.zadd(history_key(user_id, source_of(r.action_type)), {r.encode(): r.timestamp_ms})


def write_content(client: redis.Redis, content_id: str, vector: Sequence[float]) -> None:
    record = EmbeddingRecord(
        tuple(vector), "content-v1", NOW_MS, NOW_MS, 0, dtype=EmbeddingDType.FLOAT32
    )
    client.set(content_embedding_key(content_id), record.encode())


def rank_body(n: int, cfg: LLaTTEConfig, user_id: str = "u1", **extra: object) -> dict:
    g = torch.Generator().manual_seed(n)
    candidates = [
        {
            "ad_id": f"ad-{i}",
            "advertiser_id": f"adv-{i % 3}",
            "content_embedding": torch.randn(cfg.content_dim, generator=g).tolist(),
            "floats": torch.rand(cfg.n_candidate_floats, generator=g).tolist(),
        }
        for i in range(n)
    ]
    body = {
        "user_id": user_id,
        "context": {"surface": "feed", "device": "ios", "time_ms": NOW_MS},
        "candidates": candidates,
    }
    body.update(extra)
    return body


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """One sample's value in a /metrics page (0 when the sample is absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == (labels or {}):
                return sample.value
    return 0.0


@functools.cache
def offline_checkpoint(checkpoint: Path) -> Checkpoint:
    return load_checkpoint(checkpoint, stage="online")


def offline_probs(
    checkpoint: Path,
    body: dict,
    history: Sequence[HistoryRecord],
    embedding: Sequence[float] | None,
    shared: bool = True,
) -> torch.Tensor:
    """The request scored offline with shared_model from the same records -> (N, 2) [pCTR,
    pCVR]: what the service must answer."""
    ckpt = offline_checkpoint(checkpoint)
    cfg = ckpt.config
    events = EventBatch.from_records([list(history)], cfg.max_seq_len, cfg.content_dim)
    c = body["context"]
    ctx = Context.make([c["time_ms"]], [body["user_id"]], [c["surface"]], [c["device"]])
    cands = body["candidates"]
    candidates = Candidates(
        ad_hash=torch.tensor([stable_hash(x["ad_id"]) for x in cands]),
        advertiser_hash=torch.tensor([stable_hash(x["advertiser_id"]) for x in cands]),
        content=torch.tensor([x["content_embedding"] for x in cands]),
        has_content=torch.ones(len(cands), dtype=torch.bool),
        floats=torch.tensor([x["floats"] for x in cands]),
    )
    if embedding is None:
        upstream = UpstreamFeature.absent(1, cfg.d_upstream)
    else:
        upstream = UpstreamFeature(torch.tensor([list(embedding)]), torch.ones(1, dtype=torch.bool))
    return score(ckpt.model, events, ctx, candidates, upstream, shared=shared)


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for the loopback address (its own CA) and its key, made by
    ``openssl``; the test is skipped where openssl is not installed."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make a test certificate")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={LOOPBACK}",
         "-addext", f"subjectAltName=IP:{LOOPBACK}"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key
