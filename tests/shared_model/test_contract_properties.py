"""Property tests of the contract: the history merge and the binary codecs, on random inputs."""

import struct
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from shared_model import contract as c
from shared_model.contract import ActionType, EmbeddingDType, EmbeddingRecord, HistoryRecord
from tests.mutation import examples

I64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
TIMESTAMPS = st.integers(min_value=c.MIN_TIMESTAMP_MS, max_value=c.MIN_TIMESTAMP_MS + 50)
F16 = st.floats(width=16, allow_nan=False, allow_infinity=False)
F32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@st.composite
def records(draw, timestamps=TIMESTAMPS) -> HistoryRecord:
    return HistoryRecord(
        timestamp_ms=draw(timestamps),
        action_type=draw(st.sampled_from(list(ActionType))),
        item_hash=draw(I64),
        surface_hash=draw(I64),
        event_hash=draw(st.integers(min_value=0, max_value=20)),  # small: ties happen
        value=draw(F32),
        content=draw(st.none() | st.tuples(F16, F16, F16)),
    )


def _key(r: HistoryRecord) -> tuple[int, int]:
    return (r.timestamp_ms, r.event_hash)


def _oldest_first(rs: list[HistoryRecord]) -> list[HistoryRecord]:
    return sorted(rs, key=_key)


SOURCES = st.lists(st.lists(records(), max_size=12).map(_oldest_first), min_size=1, max_size=3)


@settings(max_examples=examples(200), deadline=None)
@given(sources=SOURCES, limit=st.integers(min_value=-2, max_value=40))
def test_merge_keeps_the_newest_limit_events_in_order(sources, limit):
    merged = c.merge_histories(*sources, limit=limit)
    everything = [r for src in sources for r in src]
    assert len(merged) == (min(limit, len(everything)) if limit > 0 else 0)
    # Oldest first, by (timestamp, event hash).
    assert [_key(r) for r in merged] == sorted(_key(r) for r in merged)
    # Nothing invented and nothing duplicated: a sub-multiset of the inputs.
    assert not Counter(merged) - Counter(everything)
    # What was dropped is never newer than what was kept.
    if merged:
        dropped = Counter(everything) - Counter(merged)
        assert all(_key(r) <= _key(merged[0]) for r in dropped.elements())


@settings(max_examples=examples(100), deadline=None)
@given(sources=SOURCES, limit=st.integers(min_value=1, max_value=40))
def test_merge_ignores_how_events_are_split_into_sources(sources, limit):
    everything = [r for src in sources for r in src]
    merged = c.merge_histories(*sources, limit=limit)
    as_one = c.merge_histories(_oldest_first(everything), limit=limit)
    reversed_sources = c.merge_histories(*reversed(sources), limit=limit)
    # Equal keys can order differently between splits; the kept keys cannot.
    assert [_key(r) for r in merged] == [_key(r) for r in as_one]
    assert [_key(r) for r in merged] == [_key(r) for r in reversed_sources]


@settings(max_examples=examples(200), deadline=None)
@given(rec=records(timestamps=I64))
def test_history_record_round_trips(rec):
    raw = rec.encode()
    dim = 0 if rec.content is None else len(rec.content)
    assert len(raw) == 40 + 2 * dim
    assert HistoryRecord.decode(raw) == rec
    assert raw[0] == c.HISTORY_RECORD_VERSION and raw[1] == int(rec.action_type)
    assert struct.unpack_from("<q", raw, 4)[0] == rec.timestamp_ms


@settings(max_examples=examples(200), deadline=None)
@given(
    dtype=st.sampled_from(list(EmbeddingDType)),
    data=st.data(),
    model_version=st.text(min_size=1, max_size=20),
    stamps=st.tuples(I64, I64, st.integers(min_value=0, max_value=2**32 - 1)),
)
def test_embedding_record_round_trips(dtype, data, model_version, stamps):
    values = F16 if dtype is EmbeddingDType.FLOAT16 else F32
    vector = tuple(data.draw(st.lists(values, max_size=64)))
    rec = EmbeddingRecord(vector, model_version, *stamps, dtype)
    raw = rec.encode()
    version_bytes = len(model_version.encode("utf-8"))
    assert len(raw) == 32 + version_bytes + len(vector) * dtype.itemsize
    assert EmbeddingRecord.decode(raw, expected_dim=len(vector)) == rec
