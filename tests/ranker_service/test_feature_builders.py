"""The ranker's embedding decision and feature builders, case by case (no server).

What each builder hands the model is compared with the shared_model reference or with values
written out by hand: the upstream feature's values and presence, the age boundary, candidate
content by id or inline, the context hashes, inline events, content lookups and the scores.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ranker_service.features import (
    build_candidates,
    decide_embedding,
    inline_history,
    ranking_order,
    ranking_reference,
    ranking_scores,
    request_context,
    resolve_content,
)
from ranker_service.schemas import Candidate, EmbeddingOutcome, InlineEvent
from ranker_service.store import FetchOutcome
from shared_model.config import tiny_config
from shared_model.contract import (
    ActionType,
    ContractError,
    EmbeddingDType,
    EmbeddingRecord,
    HistoryRecord,
    stable_hash,
)
from shared_model.features import Context
from tests.ranker_service.helpers import NOW_MS

CFG = tiny_config("online")
MAX_AGE = 60_000


def record(version: str = "up-1", computed: int = NOW_MS - 1000, dim: int = CFG.d_upstream):
    vector = tuple(0.125 * (i - dim / 2) for i in range(dim))
    return EmbeddingRecord(vector, version, computed, computed - 5, 3)


def decide(raw, fetch=FetchOutcome.OK, **kw):
    return decide_embedding(raw, fetch, CFG, "up-1", NOW_MS, MAX_AGE, **kw)


def test_a_hit_hands_the_stored_vector_to_the_model():
    r = record()
    d = decide(r.encode())
    assert d.outcome is EmbeddingOutcome.HIT and d.used
    assert d.age_ms == 1000 and d.model_version == "up-1"
    assert d.feature.embedding.shape == (1, CFG.d_upstream)
    assert d.feature.embedding.dtype == torch.float32
    assert d.feature.embedding[0].tolist() == list(EmbeddingRecord.decode(r.encode()).vector)
    assert d.feature.present.dtype == torch.bool and d.feature.present.tolist() == [True]


def test_the_age_limit_is_inclusive():
    assert decide(record(computed=NOW_MS - MAX_AGE).encode()).outcome is EmbeddingOutcome.HIT
    stale = decide(record(computed=NOW_MS - MAX_AGE - 1).encode())
    assert stale.outcome is EmbeddingOutcome.STALE and not stale.used
    assert stale.age_ms == MAX_AGE + 1 and stale.model_version == "up-1"
    assert_absent(stale)


def test_another_version_reports_its_age_and_version():
    d = decide(record("up-2", computed=NOW_MS - 7).encode())
    assert d.outcome is EmbeddingOutcome.VERSION_MISMATCH
    assert (d.age_ms, d.model_version) == (7, "up-2")
    assert_absent(d)


def assert_absent(d) -> None:
    assert not d.used
    assert d.feature.embedding.shape == (1, CFG.d_upstream)
    assert torch.count_nonzero(d.feature.embedding) == 0
    assert d.feature.present.dtype == torch.bool and d.feature.present.tolist() == [False]


@pytest.mark.parametrize(
    ("raw", "fetch", "enabled", "outcome"),
    [
        (None, FetchOutcome.OK, True, EmbeddingOutcome.MISSING),
        (b"\x01\x02", FetchOutcome.OK, True, EmbeddingOutcome.CORRUPT),
        ("wide", FetchOutcome.OK, True, EmbeddingOutcome.CORRUPT),
        ("good", FetchOutcome.TIMEOUT, True, EmbeddingOutcome.TIMEOUT),
        ("good", FetchOutcome.UNAVAILABLE, True, EmbeddingOutcome.UNAVAILABLE),
        ("good", FetchOutcome.TIMEOUT, False, EmbeddingOutcome.DISABLED),
        ("good", FetchOutcome.OK, False, EmbeddingOutcome.DISABLED),
    ],
)
def test_every_unused_embedding_is_absent_zeros(raw, fetch, enabled, outcome):
    raws = {"good": record().encode(), "wide": record(dim=CFG.d_upstream + 1).encode()}
    d = decide(raws.get(raw, raw), fetch, enabled=enabled)
    assert d.outcome is outcome
    assert_absent(d)


def test_a_non_utf8_model_version_is_corrupt():
    raw = bytearray(record("up-x").encode())
    raw[raw.index(b"up-x") + 3] = 0xFF
    assert decide(bytes(raw)).outcome is EmbeddingOutcome.CORRUPT


def cand(i: int, **kw) -> Candidate:
    return Candidate(ad_id=f"ad-{i}", advertiser_id=f"adv-{i}", **kw)


def test_build_candidates_takes_content_inline_first_then_by_id():
    E, F = CFG.content_dim, CFG.n_candidate_floats
    inline, by_id = [0.5] * E, np.arange(E, dtype=np.float32)
    cands = [
        cand(0, content_embedding=inline, content_id="c1", floats=[0.25] * F),
        cand(1, content_id="c1"),
        cand(2, content_id="unknown"),
        cand(3),
    ]
    built = build_candidates(cands, CFG, {"c1": by_id})
    assert built.content.tolist() == [inline, by_id.tolist(), [0.0] * E, [0.0] * E]
    assert built.has_content.dtype == torch.bool
    assert built.has_content.tolist() == [True, True, False, False]
    assert built.floats.tolist() == [[0.25] * F] + [[0.0] * F] * 3
    assert built.ad_hash.tolist() == [stable_hash(f"ad-{i}") for i in range(4)]
    assert built.advertiser_hash.tolist() == [stable_hash(f"adv-{i}") for i in range(4)]
    assert built.ad_hash.dtype == built.advertiser_hash.dtype == torch.long
    assert built.content.dtype == built.floats.dtype == torch.float32


def test_build_candidates_with_every_float_sent_and_with_none():
    F = CFG.n_candidate_floats
    sent = [[0.125 * (i + j) for j in range(F)] for i in range(3)]
    built = build_candidates([cand(i, floats=f) for i, f in enumerate(sent)], CFG, {})
    assert built.floats.dtype == torch.float32 and built.floats.tolist() == sent
    assert build_candidates([cand(i) for i in range(3)], CFG, {}).floats.tolist() == [[0.0] * F] * 3


def test_build_candidates_without_content_features():
    cfg = dataclasses.replace(tiny_config("online"), content_dim=0)
    built = build_candidates([cand(0, content_id="c1"), cand(1)], cfg, {"c1": np.ones(0)})
    assert built.content.dtype == torch.float32 and built.content.shape == (2, 0)
    assert built.has_content.dtype == torch.bool and built.has_content.tolist() == [False, False]


def test_request_context_equals_the_reference():
    got = request_context(NOW_MS, "user-7", "reels", "android")
    want = Context.make([NOW_MS], ["user-7"], ["reels"], ["android"])
    for name in ("request_time_ms", "user_hash", "surface_hash", "device_hash"):
        a, b = getattr(got, name), getattr(want, name)
        assert a.dtype == b.dtype == torch.long and torch.equal(a, b), name


def test_ranking_scores_multiply_in_float64_and_apply_bids():
    probs = np.array([[1 / 3, 1 / 7], [0.5, 0.25], [0.9, 0.1]], dtype=np.float32)
    p = probs.astype(np.float64)
    got = ranking_scores(probs, [None, 2.0, 0.5])
    assert got.dtype == np.float64
    assert got.tolist() == [
        p[0, 0] * p[0, 1],
        p[1, 0] * p[1, 1] * 2.0,
        p[2, 0] * p[2, 1] * 0.5,
    ]
    assert got[0] != np.float32(p[0, 0]) * np.float32(p[0, 1])  # not the float32 product


def test_ranking_order_is_descending_and_keeps_ties_in_request_order():
    assert ranking_order(np.array([0.2, 0.5, 0.2, 0.0, 0.5])) == [1, 4, 0, 2, 3]


_prob = st.floats(0, 1, width=32)
_bid = st.one_of(st.none(), st.sampled_from([0.0, 0.5, 1.0, 2.0]), st.floats(0, 1e6))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_prob, _prob, _bid), min_size=1, max_size=40))
def test_ranking_scores_and_order_equal_the_per_candidate_reference(rows):
    """Ties are common here (few distinct values): the order must keep them as sent."""
    probs = np.array([[a, b] for a, b, _ in rows], dtype=np.float32)  # (N, 2)
    bids = [bid for _, _, bid in rows]
    scores = ranking_scores(probs, bids)
    want_scores, want_order = ranking_reference(probs.tolist(), bids)
    assert scores.tolist() == want_scores
    assert ranking_order(scores) == want_order


def test_inline_history_keeps_equal_events_apart_and_sorts_them():
    e = {"timestamp_ms": NOW_MS - 10, "action_type": "click", "item_id": "i", "surface": "reels"}
    later = {**e, "timestamp_ms": NOW_MS - 5, "action_type": 4, "value": 2.5}
    later["content_embedding"] = [0.25] * CFG.content_dim
    events = [InlineEvent(**later), InlineEvent(**e), InlineEvent(**e)]
    records = inline_history(events, "u1")
    assert len(records) == 3  # positional ids keep the two equal events apart
    assert [r.timestamp_ms for r in records] == [NOW_MS - 10, NOW_MS - 10, NOW_MS - 5]
    newest = records[-1]
    assert newest.action_type is ActionType.CONVERSION and newest.value == 2.5
    assert newest.surface_hash == stable_hash("reels") and newest.item_hash == stable_hash("i")
    assert newest.content == (0.25,) * CFG.content_dim and records[0].content is None
    twice = [InlineEvent(**e, event_id="same"), InlineEvent(**e, event_id="same")]
    named = inline_history(twice, "u1")
    assert named[0] == named[1]  # the same event sent twice is the same record
    assert isinstance(named[0], HistoryRecord)


def test_inline_history_names_the_bad_event():
    bad = InlineEvent(timestamp_ms=NOW_MS, action_type="teleport", item_id="i")
    good = InlineEvent(timestamp_ms=NOW_MS, action_type="click", item_id="i")
    with pytest.raises(ContractError, match=r"^events\[1\]: "):
        inline_history([good, bad], "u1")


def content_record(dim: int) -> bytes:
    return EmbeddingRecord(
        tuple(float(i) for i in range(dim)), "content-v1", NOW_MS, NOW_MS, 0,
        dtype=EmbeddingDType.FLOAT32,
    ).encode()  # fmt: skip


def test_resolve_content_counts_each_candidates_lookup():
    E = CFG.content_dim
    cands = [
        cand(0),  # no content id: no lookup (and the candidates after it still count)
        cand(1, content_id="cached"),
        cand(2, content_id="fresh"),
        cand(3, content_id="fresh"),  # two candidates, one read
        cand(4, content_id="gone"),
        cand(5, content_id="gone"),
        cand(6, content_id="gone-too"),
        cand(7, content_id="broken"),
        cand(8, content_id="broken-too"),
        cand(9, content_id="gone", content_embedding=[0.0] * E),  # inline: no lookup
    ]
    raw = {
        "fresh": content_record(E),
        "gone": None,
        "gone-too": None,
        "broken": content_record(E + 1),
        "broken-too": b"junk",
    }
    fresh, lookups = resolve_content(
        cands, FetchOutcome.OK, raw, {"cached": np.zeros(E, np.float32)}, E
    )
    assert list(fresh) == ["fresh"] and fresh["fresh"].tolist() == [float(i) for i in range(E)]
    assert lookups == {"hit": 3, "missing": 3, "corrupt": 2, "timeout": 0, "unavailable": 0}


@pytest.mark.parametrize("fetch", [FetchOutcome.TIMEOUT, FetchOutcome.UNAVAILABLE])
def test_resolve_content_counts_a_failed_read_under_its_outcome(fetch):
    E = CFG.content_dim
    cands = [cand(0, content_id="cached"), cand(1, content_id="a"), cand(2, content_id="b")]
    fresh, lookups = resolve_content(cands, fetch, {}, {"cached": np.zeros(E, np.float32)}, E)
    assert fresh == {}
    assert lookups == {"hit": 1, "missing": 0, "corrupt": 0, "timeout": 0, "unavailable": 0} | {
        fetch.value: 2
    }


def test_resolve_content_without_content_features_looks_nothing_up():
    _, lookups = resolve_content([cand(0, content_id="a")], FetchOutcome.OK, {}, {}, 0)
    assert sum(lookups.values()) == 0
