import re
import struct

import pytest

from shared_model import contract as c
from shared_model.contract import (
    ActionType,
    ContractError,
    EmbeddingDType,
    EmbeddingRecord,
    HistoryRecord,
    UserEvent,
)

TS = 1_750_000_000_000


def make_event(**kw) -> UserEvent:
    base = dict(
        event_id="e1",
        user_id="u1",
        timestamp_ms=TS,
        action_type="conversion",
        item_id="ad:7",
        surface="feed",
    )
    base.update(kw)
    return UserEvent(**base)


def test_event_round_trip_and_key():
    ev = make_event(content_embedding=[0.5, -1.25], value=3.0, metadata={"campaign": "x"})
    back = UserEvent.decode(ev.encode())
    assert back == ev
    assert back.action_type is ActionType.CONVERSION
    assert ev.kafka_key() == b"u1"
    assert b'"action_type":"conversion"' in ev.encode()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\xff\xfe", "not valid UTF-8 JSON"),
        (b"{not json", "not valid UTF-8 JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"event_id": "e"}', "missing event field(s): action_type, item_id"),
        (
            b'{"event_id":"e","user_id":"u","timestamp_ms":1750000000000,"action_type":"buy",'
            b'"item_id":"i"}',
            "unknown action_type 'buy'",
        ),
        (
            b'{"event_id":"e","user_id":"u","timestamp_ms":5,"action_type":"click","item_id":"i"}',
            "timestamp_ms=5 is outside",
        ),
        (
            b'{"event_id":"e","user_id":"u","timestamp_ms":"now","action_type":"click",'
            b'"item_id":"i"}',
            "timestamp_ms must be an integer",
        ),
        (
            b'{"event_id":"e","user_id":"u{x}","timestamp_ms":1750000000000,"action_type":"click",'
            b'"item_id":"i"}',
            "no braces",
        ),
        (
            b'{"event_id":"e","user_id":"u","timestamp_ms":1750000000000,"action_type":"click",'
            b'"item_id":"i","extra":1}',
            "unknown event field(s): extra",
        ),
        (
            b'{"event_id":"e","user_id":"u","timestamp_ms":1750000000000,"action_type":"click",'
            b'"item_id":"i","content_embedding":[1, "x"]}',
            "finite numbers only",
        ),
        (
            b'{"event_id":"e","user_id":"u","timestamp_ms":1750000000000,"action_type":"click",'
            b'"item_id":"i","schema_version":99}',
            "unsupported event schema_version 99",
        ),
    ],
)
def test_bad_events_name_the_problem(raw, message):
    with pytest.raises(ContractError, match=None) as err:
        UserEvent.decode(raw)
    assert message in str(err.value)


def test_history_record_round_trip_and_determinism():
    ev = make_event(content_embedding=[0.5, -1.25, 2.0], value=4.5)
    rec = ev.to_history_record()
    raw = rec.encode()
    assert raw == ev.to_history_record().encode()  # replay -> same member -> stored once
    back = HistoryRecord.decode(raw)
    assert back == rec
    assert back.content == (0.5, -1.25, 2.0)  # exactly representable in float16
    plain = make_event(event_id="e2").to_history_record()
    assert HistoryRecord.decode(plain.encode()) == plain
    assert plain.encode() != make_event(event_id="e3").to_history_record().encode()


def test_history_record_corruption():
    raw = make_event(content_embedding=[1.0, 2.0]).to_history_record().encode()
    with pytest.raises(ContractError, match="too short"):
        HistoryRecord.decode(raw[:10])
    with pytest.raises(ContractError, match="length"):
        HistoryRecord.decode(raw[:-1])
    with pytest.raises(ContractError, match="unknown contract version 7"):
        HistoryRecord.decode(bytes([7]) + raw[1:])


def test_embedding_record_round_trip_both_dtypes():
    vec = tuple(float(i) / 4 for i in range(16))
    for dtype in EmbeddingDType:
        rec = EmbeddingRecord(vec, "upstream-abc", TS + 5, TS, 321, dtype)
        back = EmbeddingRecord.decode(rec.encode(), expected_dim=16)
        assert back == rec
    f16 = EmbeddingRecord(vec, "v", 0, 0, 0, EmbeddingDType.FLOAT16).encode()
    f32 = EmbeddingRecord(vec, "v", 0, 0, 0, EmbeddingDType.FLOAT32).encode()
    assert len(f32) - len(f16) == 2 * 16


def test_embedding_record_corruption():
    raw = EmbeddingRecord((1.0, 2.0, 3.0), "m1", TS, TS, 3).encode()
    with pytest.raises(ContractError, match="dim 3 != expected 4"):
        EmbeddingRecord.decode(raw, expected_dim=4)
    with pytest.raises(ContractError, match="length"):
        EmbeddingRecord.decode(raw + b"\x00")
    with pytest.raises(ContractError, match="bad magic"):
        EmbeddingRecord.decode(b"XXXX" + raw[4:])
    with pytest.raises(ContractError, match="unknown contract version 2"):
        EmbeddingRecord.decode(raw[:4] + bytes([2]) + raw[5:])
    with pytest.raises(ContractError, match="unknown dtype code 9"):
        EmbeddingRecord.decode(raw[:5] + bytes([9]) + raw[6:])
    with pytest.raises(ContractError, match="too short"):
        EmbeddingRecord.decode(b"LLEM")
    nan = raw[:-2] + struct.pack("<e", float("nan"))
    with pytest.raises(ContractError, match="non-finite"):
        EmbeddingRecord.decode(nan)


def test_key_layout_shares_one_cluster_slot():
    keys = [c.history_key("user-42", s) for s in c.HISTORY_SOURCES]
    keys.append(c.embedding_key("user-42"))
    for key in keys:
        assert key.startswith("llatte:u:{user-42}:")  # hash tag = the user id
    assert len(set(keys)) == len(keys)
    with pytest.raises(ContractError, match="no braces"):
        c.embedding_key("a}b")
    with pytest.raises(ContractError, match="unknown history source"):
        c.history_key("u", "clicks")


def test_sources_and_merge():
    assert c.source_of(ActionType.VIEW) == c.SOURCE_IMPRESSION
    assert c.source_of(ActionType.CONVERSION) == c.SOURCE_ENGAGEMENT
    a = [
        make_event(event_id=f"a{i}", timestamp_ms=TS + 10 * i).to_history_record() for i in range(3)
    ]
    b = [
        make_event(event_id=f"b{i}", timestamp_ms=TS + 10 * i + 5).to_history_record()
        for i in range(3)
    ]
    merged = c.merge_histories(a, b, limit=4)
    assert [r.timestamp_ms - TS for r in merged] == [10, 15, 20, 25]
    assert c.merge_histories(a, b, limit=0) == []


def test_stable_hash_is_stable():
    # A golden value: the hash must never change across processes, machines or releases.
    assert c.stable_hash("ad:7") == c.stable_hash("ad:7")
    assert c.stable_hash("ad:7") == 0x7FFF_FFFF_FFFF_FFFF & int.from_bytes(
        __import__("hashlib").blake2b(b"ad:7", digest_size=8).digest(), "little"
    )
    assert 0 <= c.stable_hash("x") < 2**63


def test_versioned_embedding_keys_golden_and_one_slot():
    assert c.CONTRACT_VERSION == 2
    key = c.versioned_embedding_key("user-42", "upstream-3f2a9c1d7e0b")
    assert key == "llatte:u:{user-42}:emb:upstream-3f2a9c1d7e0b"
    assert c.embedding_key("user-42") == "llatte:u:{user-42}:emb"  # version 1, still read
    assert c.user_of_key(key.encode()) == "user-42"
    assert c.user_of_key(c.history_key("a b", "eng")) == "a b"
    assert c.versioned_embedding_pattern("m1") == "llatte:u:*:emb:m1"
    assert c.history_pattern() == "llatte:u:*:hist:*"
    for bad in ("a*", "v:1", "x[1]", "", "a}b"):
        with pytest.raises(ContractError, match="model_version"):
            c.versioned_embedding_key("u", bad)
    with pytest.raises(ContractError, match="not a per-user key"):
        c.user_of_key("llatte:content:x")


def test_record_bytes_keep_their_version_1_layout():
    # Contract version 2 changed the key layout only: records written before still decode.
    raw = EmbeddingRecord((1.0, -2.0), "m1", TS, TS - 5, 3).encode()
    assert raw[4] == c.EMBEDDING_RECORD_VERSION == 1
    assert HistoryRecord(TS, ActionType.CLICK, 1, 2, 3).encode()[0] == 1
    assert make_event().schema_version == 1


def test_refresh_request_round_trip_golden():
    req = c.RefreshRequest("user-42", "upstream-3f2a", TS)
    raw = req.encode()
    assert raw == (
        b'{"user_id":"user-42","model_version":"upstream-3f2a",'
        b'"requested_at_ms":1750000000000,"schema_version":1}'
    )
    assert c.RefreshRequest.decode(raw) == req
    assert req.kafka_key() == b"user-42"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{bad", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"user_id":"u"}', "missing refresh request field(s): model_version, requested_at_ms"),
        (b'{"user_id":"u","model_version":"m","requested_at_ms":5}', "requested_at_ms=5"),
        (
            b'{"user_id":"u","model_version":"m","requested_at_ms":1750000000000,"x":1}',
            "unknown refresh request field(s): x",
        ),
        (
            b'{"user_id":"u","model_version":"m","requested_at_ms":1750000000000,'
            b'"schema_version":9}',
            "unsupported refresh request schema_version 9",
        ),
    ],
)
def test_bad_refresh_requests_name_the_problem(raw, message):
    with pytest.raises(ContractError, match=re.escape(message)):
        c.RefreshRequest.decode(raw)
