"""The numpy record decoders (ranker_service.records) against the contract's reference decoders.

Same accept/reject decisions for every member (valid, truncated, extended, wrong version,
content width, action type, random bytes) and the same values, NaN included.
"""

from __future__ import annotations

import math
import struct
from dataclasses import fields

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ranker_service import records as records_module
from ranker_service.features import decode_history, history_events, user_events
from ranker_service.records import (
    HISTORY_HEADER_SIZE,
    decode_embedding,
    decode_history_columns,
    history_dtype,
)
from shared_model.config import tiny_config
from shared_model.contract import (
    _HISTORY_HEADER,
    ActionType,
    EmbeddingDType,
    EmbeddingRecord,
    HistoryRecord,
)
from shared_model.features import EventBatch
from tests.mutation import examples

CFG = tiny_config("online")
E = CFG.content_dim
BASE_MS = 1_750_000_000_000
i64 = st.integers(-(2**63), 2**63 - 1)
f16 = st.floats(width=16, allow_nan=True, allow_infinity=True)
f32 = st.floats(width=32, allow_nan=True, allow_infinity=True)


def test_layout_matches_the_contract() -> None:
    assert _HISTORY_HEADER.size == HISTORY_HEADER_SIZE
    assert history_dtype(E).itemsize == _HISTORY_HEADER.size + 2 * E


@st.composite
def history_records(draw: st.DrawFn) -> HistoryRecord:
    dim = draw(st.sampled_from([0, E, E + 1]))  # E + 1: another width reads as no content
    return HistoryRecord(
        timestamp_ms=BASE_MS + draw(st.integers(0, 5)) * 1000,  # few values: many ties
        action_type=draw(st.sampled_from(list(ActionType))),
        item_hash=draw(i64),
        surface_hash=draw(i64),
        event_hash=draw(st.integers(0, 3)),  # ties on (timestamp, event_hash) too
        value=draw(f32),
        content=tuple(draw(st.lists(f16, min_size=dim, max_size=dim))) if dim else None,
    )


@st.composite
def members(draw: st.DrawFn) -> bytes:
    """An encoded record, often broken on purpose."""
    raw = draw(history_records()).encode()
    how = draw(
        st.sampled_from(
            ["ok", "ok", "ok", "truncate", "extend", "version", "action", "dim", "random"]
        )
    )
    if how == "truncate":
        return raw[: draw(st.integers(0, len(raw) - 1))]
    if how == "extend":
        return raw + draw(st.binary(min_size=1, max_size=4))
    if how == "version":
        return bytes([draw(st.integers(0, 255).filter(lambda v: v != 1))]) + raw[1:]
    if how == "action":
        bad = draw(st.sampled_from([0, 6, 7, 255]))
        return raw[:1] + bytes([bad]) + raw[2:]
    if how == "dim":  # header says another width than the bytes hold
        dim = struct.unpack_from("<H", raw, 2)[0]
        return raw[:2] + struct.pack("<H", (dim + draw(st.integers(1, 3))) % 65536) + raw[4:]
    if how == "random":
        return draw(st.binary(max_size=2 * HISTORY_HEADER_SIZE))
    return raw


def _reference(member: bytes) -> HistoryRecord | None:
    try:
        return HistoryRecord.decode(member)
    except (ValueError, struct.error):
        return None


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(members(), max_size=30))
def test_columns_accept_reject_and_values_equal_the_reference(raw: list[bytes]) -> None:
    expected = [r for r in map(_reference, raw) if r is not None]
    columns, corrupt = decode_history_columns(raw, E)
    assert corrupt == len(raw) - len(expected)
    assert len(columns) == len(expected)
    for i, r in enumerate(expected):  # input order kept
        assert columns.timestamps_ms[i] == r.timestamp_ms
        assert columns.action_type[i] == int(r.action_type)
        assert columns.item_hash[i] == r.item_hash
        assert columns.surface_hash[i] == r.surface_hash
        assert columns.event_hash[i] == r.event_hash
        assert _same(float(columns.value[i]), r.value)
        content = r.content if r.content is not None and len(r.content) == E else (0.0,) * E
        assert all(_same(float(a), b) for a, b in zip(columns.content[i], content, strict=True))


def _assert_batches_equal(fast: EventBatch, reference: EventBatch) -> None:
    for f in fields(EventBatch):
        a, b = getattr(fast, f.name), getattr(reference, f.name)
        assert a.dtype == b.dtype and a.shape == b.shape, f.name
        assert torch.equal(torch.nan_to_num(a), torch.nan_to_num(b)), f.name
        if a.is_floating_point():
            assert torch.equal(a.isnan(), b.isnan()), f.name


@settings(max_examples=examples(300), deadline=None)
@given(
    eng=st.lists(members(), max_size=20),
    imp=st.lists(members(), max_size=20),
    length=st.integers(0, CFG.max_seq_len + 4),
)
def test_history_events_equal_decode_then_from_records(
    eng: list[bytes], imp: list[bytes], length: int
) -> None:
    """The serving path equals the reference: per-record decode, merge_histories, from_records."""
    records, corrupt = decode_history([eng, imp], limit=length)
    fast, kept, fast_corrupt = history_events([eng, imp], length, E)
    assert (kept, fast_corrupt) == (len(records), corrupt)
    _assert_batches_equal(fast, EventBatch.from_records([records], length, E))
    _assert_batches_equal(fast, user_events(records, length, E))


@st.composite
def same_length_members(draw: st.DrawFn) -> bytes:
    """A record with content of width E, sometimes broken without changing its length."""
    r = draw(history_records())
    raw = HistoryRecord(
        r.timestamp_ms, r.action_type, r.item_hash, r.surface_hash, r.event_hash, r.value,
        tuple(draw(st.lists(f16, min_size=E, max_size=E))),
    ).encode()  # fmt: skip
    how = draw(st.sampled_from(["ok", "ok", "ok", "version", "action", "dim"]))
    if how == "version":
        return bytes([draw(st.integers(0, 255).filter(lambda v: v != 1))]) + raw[1:]
    if how == "action":
        return raw[:1] + bytes([draw(st.sampled_from([0, 6, 7, 255]))]) + raw[2:]
    if how == "dim":
        return raw[:2] + struct.pack("<H", E + draw(st.integers(1, 3))) + raw[4:]
    return raw


@settings(max_examples=examples(300), deadline=None)
@given(
    eng=st.lists(same_length_members(), max_size=20),
    imp=st.lists(same_length_members(), max_size=20),
    length=st.integers(1, CFG.max_seq_len + 4),
)
def test_one_width_history_takes_the_row_path_and_equals_the_reference(
    eng: list[bytes], imp: list[bytes], length: int
) -> None:
    """Members all of one record length (the serving case) are ordered and trimmed as whole
    rows, never through the columns path, and still equal the per-record reference."""
    records, corrupt = decode_history([eng, imp], limit=length)
    real = records_module.recent_history
    records_module.recent_history = None  # the columns path would fail: not taken
    try:
        fast, kept, fast_corrupt = history_events([eng, imp], length, E)
    finally:
        records_module.recent_history = real
    assert (kept, fast_corrupt) == (len(records), corrupt)
    _assert_batches_equal(fast, EventBatch.from_records([records], length, E))


def test_one_width_history_skips_corrupt_rows_and_keeps_the_rest_in_order() -> None:
    def record(i: int) -> bytes:
        return HistoryRecord(BASE_MS + i, ActionType.CLICK, 100 + i, 0, i, 1.0, (0.5,) * E).encode()

    broken = [bytes([2]) + record(0)[1:], record(1)[:1] + bytes([9]) + record(1)[2:]]
    sources = [[broken[0], record(2), broken[1], record(4)], [record(3), record(5)]]
    fast, kept, corrupt = history_events(sources, 3, E)
    assert (kept, corrupt) == (3, 2)
    assert fast.item_hash[0].tolist() == [103, 104, 105]
    assert fast.timestamps_ms[0].tolist() == [BASE_MS + 3, BASE_MS + 4, BASE_MS + 5]


def test_one_width_ties_order_by_event_hash_then_source() -> None:
    """On the whole-row path too: equal timestamps order by event_hash, full ties keep the
    sources' order."""

    def rec(item: int, event_hash: int) -> bytes:
        return HistoryRecord(
            BASE_MS, ActionType.CLICK, item, 0, event_hash, 0.0, (0.5,) * E
        ).encode()

    sources = [[rec(0, 3), rec(1, 1)], [rec(10, 1), rec(11, 2)]]
    fast, kept, _ = history_events(sources, 4, E)
    assert kept == 4 and fast.item_hash[0].tolist() == [1, 10, 11, 0]
    reference, _ = decode_history(sources, limit=4)
    assert [r.item_hash for r in reference] == [1, 10, 11, 0]


def test_records_without_content_take_the_row_path_for_a_model_without_content() -> None:
    def rec(t: int) -> bytes:
        return HistoryRecord(BASE_MS + t, ActionType.VIEW, t, 0, t, 0.5, None).encode()

    sources = [[rec(t) for t in (1, 4, 5)], [rec(t) for t in (2, 3)]]
    real = records_module.recent_history
    records_module.recent_history = None  # the columns path would fail: not taken
    try:
        fast, kept, corrupt = history_events(sources, 4, 0)
    finally:
        records_module.recent_history = real
    records, _ = decode_history(sources, limit=4)
    assert (kept, corrupt) == (4, 0) and fast.content.shape == (1, 4, 0)
    _assert_batches_equal(fast, EventBatch.from_records([records], 4, 0))


def test_history_events_at_serving_size() -> None:
    """400 + 400 members of one width, the common case: one frombuffer."""
    g = np.random.default_rng(0)
    sources = [
        [
            HistoryRecord(
                BASE_MS + int(t), ActionType.CLICK, int(t), 7, int(t) * 3 + s, 0.5,
                tuple(g.standard_normal(E).astype(np.float16).tolist()),
            ).encode()
            for t in sorted(g.integers(0, 10**6, 400))
        ]
        for s in range(2)
    ]  # fmt: skip
    records, _ = decode_history(sources, limit=CFG.max_seq_len)
    fast, kept, corrupt = history_events(sources, CFG.max_seq_len, E)
    assert (kept, corrupt) == (CFG.max_seq_len, 0)
    _assert_batches_equal(fast, EventBatch.from_records([records], CFG.max_seq_len, E))


@st.composite
def embedding_members(draw: st.DrawFn) -> bytes:
    dtype = draw(st.sampled_from(list(EmbeddingDType)))
    dim = draw(st.integers(1, 6))
    values = st.floats(width=16 if dtype is EmbeddingDType.FLOAT16 else 32)
    record = EmbeddingRecord(
        vector=tuple(draw(st.lists(values, min_size=dim, max_size=dim))),
        model_version=draw(st.text(max_size=6)),
        computed_at_ms=draw(i64),
        newest_event_ms=draw(i64),
        history_length=draw(st.integers(0, 2**32 - 1)),
        dtype=dtype,
    )
    raw = record.encode()
    how = draw(st.sampled_from(["ok", "ok", "truncate", "extend", "byte", "random"]))
    if how == "truncate":
        return raw[: draw(st.integers(0, len(raw) - 1))]
    if how == "extend":
        return raw + draw(st.binary(min_size=1, max_size=4))
    if how == "byte":  # any one byte changed: magic, version, dtype, lengths, utf-8, values
        at = draw(st.integers(0, len(raw) - 1))
        return raw[:at] + bytes([draw(st.integers(0, 255))]) + raw[at + 1 :]
    if how == "random":
        return draw(st.binary(max_size=64))
    return raw


@settings(max_examples=examples(400), deadline=None)
@given(raw=embedding_members(), expected_dim=st.sampled_from([None, 1, 3, 6]))
def test_embedding_decode_equals_the_reference(raw: bytes, expected_dim: int | None) -> None:
    try:
        reference = EmbeddingRecord.decode(raw, expected_dim=expected_dim)
    except (ValueError, struct.error) as e:
        try:
            decode_embedding(raw, expected_dim=expected_dim)
        except (ValueError, struct.error) as fast_error:
            assert type(fast_error) is type(e) and str(fast_error) == str(e)
        else:
            raise AssertionError(f"numpy decoder accepted what the reference rejects: {e}")
        return
    fast = decode_embedding(raw, expected_dim=expected_dim)
    assert fast.vector.dtype == np.float32
    assert fast.vector.tolist() == list(reference.vector)
    assert (fast.model_version, fast.computed_at_ms, fast.newest_event_ms) == (
        reference.model_version,
        reference.computed_at_ms,
        reference.newest_event_ms,
    )
    assert (fast.history_length, fast.dtype) == (reference.history_length, reference.dtype)


def test_a_non_finite_embedding_is_refused_by_name() -> None:
    raw = EmbeddingRecord((0.5, float("nan")), "up-1", BASE_MS, BASE_MS, 1).encode()
    for decode in (decode_embedding, EmbeddingRecord.decode):
        try:
            decode(raw)
        except ValueError as e:
            assert str(e) == "embedding record contains non-finite values"
        else:
            raise AssertionError(f"{decode.__qualname__} accepted a NaN")


def test_ties_break_by_event_hash_then_source_order() -> None:
    """merge_histories' order: (timestamp_ms, event_hash), stable for full ties."""
    ts = BASE_MS
    eng = [HistoryRecord(ts, ActionType.CLICK, i, 0, h, 0.0, None) for i, h in enumerate([3, 1])]
    imp = [
        HistoryRecord(ts, ActionType.VIEW, 10 + i, 0, h, 0.0, None) for i, h in enumerate([1, 2])
    ]
    sources = [[r.encode() for r in eng], [r.encode() for r in imp]]
    fast, kept, _ = history_events(sources, 3, E)
    # event_hash 1 (eng item 1, then imp item 10: a full tie keeps the sources' order), 2, 3;
    # the limit keeps the last three.
    assert kept == 3 and fast.item_hash[0].tolist() == [10, 11, 0]
    reference, _ = decode_history(sources, limit=3)
    assert [r.item_hash for r in reference] == [10, 11, 0]
