"""Request + Redis bytes -> the model's input tensors. Pure functions, no I/O.

Shape legend: T history length (cfg.max_seq_len), N candidates, E content width, F candidate
floats, U upstream width.

Nothing here raises on bad Redis data: a record that does not decode (ContractError) is
counted and treated as missing, so a corrupt record can never fail a request.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from ranker_service.schemas import Candidate, EmbeddingOutcome, InlineEvent
from ranker_service.store import FetchOutcome
from shared_model.config import LLaTTEConfig
from shared_model.contract import (
    ContractError,
    EmbeddingRecord,
    HistoryRecord,
    UserEvent,
    merge_histories,
    stable_hash,
)
from shared_model.features import Candidates, EventBatch, UpstreamFeature


@dataclass
class EmbeddingDecision:
    outcome: EmbeddingOutcome
    feature: UpstreamFeature  # (1, U) and its presence flag
    age_ms: int | None = None
    model_version: str | None = None

    @property
    def used(self) -> bool:
        return self.outcome is EmbeddingOutcome.HIT


def decide_embedding(
    raw: bytes | None,
    fetch: FetchOutcome,
    cfg: LLaTTEConfig,
    expected_version: str | None,
    request_time_ms: int,
    max_age_ms: int,
    enabled: bool = True,
) -> EmbeddingDecision:
    """Use the cached upstream embedding only when it is there, intact, fresh and ours."""
    absent = UpstreamFeature.absent(1, cfg.d_upstream)
    if not enabled:
        return EmbeddingDecision(EmbeddingOutcome.DISABLED, absent)
    if fetch is FetchOutcome.TIMEOUT:
        return EmbeddingDecision(EmbeddingOutcome.TIMEOUT, absent)
    if fetch is FetchOutcome.UNAVAILABLE:
        return EmbeddingDecision(EmbeddingOutcome.UNAVAILABLE, absent)
    if raw is None:
        return EmbeddingDecision(EmbeddingOutcome.MISSING, absent)
    try:
        record = EmbeddingRecord.decode(raw, expected_dim=cfg.d_upstream)
    except (ValueError, struct.error):  # ContractError, bad UTF-8
        return EmbeddingDecision(EmbeddingOutcome.CORRUPT, absent)
    age_ms = request_time_ms - record.computed_at_ms
    if record.model_version != expected_version:
        return EmbeddingDecision(
            EmbeddingOutcome.VERSION_MISMATCH, absent, age_ms, record.model_version
        )
    if age_ms > max_age_ms:
        return EmbeddingDecision(EmbeddingOutcome.STALE, absent, age_ms, record.model_version)
    feature = UpstreamFeature(
        torch.tensor(record.vector, dtype=torch.float32)[None, :],  # (1, U)
        torch.ones(1, dtype=torch.bool),
    )
    return EmbeddingDecision(EmbeddingOutcome.HIT, feature, age_ms, record.model_version)


def decode_history(
    sources: Sequence[Sequence[tuple[bytes, float]]], limit: int
) -> tuple[list[HistoryRecord], int]:
    """Per-source (member, score) pairs -> the most recent ``limit`` events, #corrupt.

    Equal to decoding every member and ``merge_histories(..., limit)`` (tested), but decodes
    newest first by score (= timestamp_ms) and stops once ``limit`` records decoded and the
    score drops below the last one kept: about half the decodes when each source holds T.
    """
    pairs = sorted(
        ((score, raw) for members in sources for raw, score in members),
        key=lambda p: p[0],
        reverse=True,
    )
    records: list[HistoryRecord] = []
    corrupt = 0
    cutoff: float | None = None
    for score, raw in pairs:
        if cutoff is not None and score < cutoff:
            break  # everything older loses to the limit records already kept
        try:
            records.append(HistoryRecord.decode(raw))
        except (ValueError, struct.error):  # ContractError and anything else malformed
            corrupt += 1
            continue
        if cutoff is None and len(records) >= limit:
            cutoff = score  # keep decoding equal scores: merge_histories breaks the ties
    return merge_histories(records, limit=limit), corrupt


def user_events(records: Sequence[HistoryRecord], length: int, content_dim: int) -> EventBatch:
    """One user's records (oldest first) -> a left-padded (1, length) EventBatch."""
    return EventBatch.from_records([records], length, content_dim)


def inline_history(events: Sequence[InlineEvent], user_id: str) -> list[HistoryRecord]:
    """Caller-sent events -> history records via the contract; ContractError names the problem.

    Events without an ``event_id`` get a positional one, so two equal events stay distinct.
    """
    records = []
    for i, e in enumerate(events):
        try:
            event = UserEvent(
                event_id=e.event_id or f"inline-{i}",
                user_id=user_id,
                timestamp_ms=e.timestamp_ms,
                action_type=e.action_type,
                item_id=e.item_id,
                surface=e.surface,
                content_embedding=tuple(e.content_embedding) if e.content_embedding else None,
                value=e.value,
            )
        except ContractError as err:
            raise ContractError(f"events[{i}]: {err}") from None
        records.append(event.to_history_record())
    return merge_histories(records, limit=len(records))


def check_candidates(cands: Sequence[Candidate], cfg: LLaTTEConfig) -> str | None:
    """The width checks that depend on the loaded model; returns the problem or None."""
    for i, c in enumerate(cands):
        if c.content_embedding is not None and len(c.content_embedding) != cfg.content_dim:
            return (
                f"candidates[{i}].content_embedding has {len(c.content_embedding)} values; "
                f"the model expects content_dim={cfg.content_dim}"
            )
        if c.floats is not None and len(c.floats) != cfg.n_candidate_floats:
            return (
                f"candidates[{i}].floats has {len(c.floats)} values; "
                f"the model expects n_candidate_floats={cfg.n_candidate_floats}"
            )
    return None


def check_inline_events(events: Sequence[InlineEvent], cfg: LLaTTEConfig) -> str | None:
    for i, e in enumerate(events):
        if e.content_embedding is not None and len(e.content_embedding) != cfg.content_dim:
            return (
                f"events[{i}].content_embedding has {len(e.content_embedding)} values; "
                f"the model expects content_dim={cfg.content_dim}"
            )
    return None


def build_candidates(
    cands: Sequence[Candidate], cfg: LLaTTEConfig, content: Mapping[str, bytes | None]
) -> tuple[Candidates, dict[str, int]]:
    """Candidates (N,) tensors; content by id comes from ``content`` (raw EmbeddingRecords).

    Returns the tensors and counts of content-id lookups by outcome (hit, missing, corrupt).
    Rows are gathered as Python lists and turned into tensors once (one call per field, not
    per candidate: at N = 500 that is the difference between 0.3 and 5 ms).
    """
    E, F = cfg.content_dim, cfg.n_candidate_floats
    zeros_e, zeros_f = [0.0] * E, [0.0] * F
    content_rows, has_content, float_rows = [], [], []
    lookups = {"hit": 0, "missing": 0, "corrupt": 0}
    for c in cands:
        vector: Sequence[float] | None = c.content_embedding
        if vector is None and c.content_id is not None and E:
            raw = content.get(c.content_id)
            if raw is None:
                lookups["missing"] += 1
            else:
                try:
                    vector = EmbeddingRecord.decode(raw, expected_dim=E).vector
                    lookups["hit"] += 1
                except (ValueError, struct.error):  # ContractError, bad UTF-8
                    lookups["corrupt"] += 1
        present = vector is not None and E > 0
        content_rows.append(vector if present else zeros_e)
        has_content.append(present)
        float_rows.append(c.floats if c.floats is not None else zeros_f)
    N = len(cands)
    tensors = Candidates(
        ad_hash=torch.tensor([stable_hash(c.ad_id) for c in cands], dtype=torch.long),
        advertiser_hash=torch.tensor(
            [stable_hash(c.advertiser_id) for c in cands], dtype=torch.long
        ),
        content=torch.tensor(content_rows, dtype=torch.float32).view(N, E),  # (N, E)
        has_content=torch.tensor(has_content, dtype=torch.bool),
        floats=torch.tensor(float_rows, dtype=torch.float32).view(N, F),  # (N, F)
    )
    return tensors, lookups


def ranking_scores(probs: torch.Tensor, bids: Sequence[float | None]) -> list[float]:
    """probs (N, 2) [pCTR, pCVR] -> pCTR * pCVR, times the bid when the candidate has one."""
    p = probs.double()  # float64: the product the response shows is the one it sorts by
    base = (p[:, 0] * p[:, 1]).tolist()
    return [s * b if b is not None else s for s, b in zip(base, bids, strict=True)]
