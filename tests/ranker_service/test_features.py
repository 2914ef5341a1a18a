"""The ranker's fast feature builders against the shared_model reference."""

from __future__ import annotations

from dataclasses import fields

import pytest
import torch

from ranker_service.features import decide_embedding, decode_history, user_events
from ranker_service.schemas import EmbeddingOutcome
from ranker_service.store import FetchOutcome
from shared_model.config import tiny_config
from shared_model.contract import (
    ActionType,
    EmbeddingRecord,
    HistoryRecord,
)
from shared_model.features import EventBatch
from tests.ranker_service.helpers import NOW_MS, make_history

CFG = tiny_config("online")


@pytest.mark.parametrize("n", [0, 1, 5, CFG.max_seq_len, CFG.max_seq_len + 7])
def test_user_events_equals_from_records(n: int) -> None:
    records = make_history(n, CFG.content_dim, seed=n)
    if n:  # a record with content of another width reads as no content, in both
        r = records[-1]
        records[-1] = HistoryRecord(
            r.timestamp_ms, ActionType.CLICK, 1, 2, 3, 0.5, (1.0,) * (CFG.content_dim + 1)
        )
    fast = user_events(records, CFG.max_seq_len, CFG.content_dim)
    reference = EventBatch.from_records([records], CFG.max_seq_len, CFG.content_dim)
    for f in fields(EventBatch):
        a, b = getattr(fast, f.name), getattr(reference, f.name)
        assert a.dtype == b.dtype and torch.equal(a, b), f.name


def test_decode_history_skips_corrupt_and_keeps_newest() -> None:
    records = make_history(10, CFG.content_dim)
    eng = [r.encode() for r in records[:6]]
    imp = [*(r.encode() for r in records[6:9]), b"\x01broken"]
    history, corrupt = decode_history([eng, imp], limit=4)
    assert corrupt == 1
    # The corrupt newest one is replaced by the next older record; float16 content round trip.
    assert history == [HistoryRecord.decode(r.encode()) for r in records[5:9]]


def test_decide_embedding_cases() -> None:
    def raw(version: str = "up-1", computed: int = NOW_MS - 1000) -> bytes:
        vec = (0.5,) * CFG.d_upstream
        return EmbeddingRecord(vec, version, computed, computed, 3).encode()

    def outcome(data: bytes | None, fetch: FetchOutcome = FetchOutcome.OK, **kw) -> str:
        return decide_embedding(data, fetch, CFG, "up-1", NOW_MS, 60_000, **kw).outcome

    assert outcome(raw()) is EmbeddingOutcome.HIT
    assert outcome(None) is EmbeddingOutcome.MISSING
    assert outcome(raw("up-2")) is EmbeddingOutcome.VERSION_MISMATCH
    assert outcome(raw(computed=NOW_MS - 60_001)) is EmbeddingOutcome.STALE
    assert outcome(raw()[:-1]) is EmbeddingOutcome.CORRUPT
    assert outcome(None, FetchOutcome.TIMEOUT) is EmbeddingOutcome.TIMEOUT
    assert outcome(None, FetchOutcome.UNAVAILABLE) is EmbeddingOutcome.UNAVAILABLE
    assert outcome(raw(), enabled=False) is EmbeddingOutcome.DISABLED
    hit = decide_embedding(raw(), FetchOutcome.OK, CFG, "up-1", NOW_MS, 60_000)
    assert hit.feature.present.tolist() == [True] and hit.age_ms == 1000
    miss = decide_embedding(None, FetchOutcome.OK, CFG, "up-1", NOW_MS, 60_000)
    assert miss.feature.present.tolist() == [False]
    assert torch.count_nonzero(miss.feature.embedding) == 0
