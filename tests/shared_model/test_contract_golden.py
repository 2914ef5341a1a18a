"""Golden bytes and values of the contract: what is stored in Redis and Kafka must never change.

Each golden value was computed once and is spelled out field by field against the layout
documented in shared_model/contract.py, so a change to a struct format, a field order, an
endianness or the hash shows up here as a failing byte string, not as a silent re-encoding.
"""

import hashlib

import pytest

from shared_model import contract as c
from shared_model.contract import ActionType, EmbeddingDType, EmbeddingRecord, HistoryRecord

TS = 1_750_000_000_000  # 0x0000_0197_7420_DC00
TS_LE = bytes.fromhex("00dc207497010000")  # TS as little-endian i64


@pytest.mark.parametrize(
    ("value", "golden"),
    [
        ("ad:7", 4927627276576415829),
        ("x", 5717441744405258058),
        ("", 3797230976420062948),
        ("user-42", 2805714510135599215),
        ("é", 3394012004367669963),  # hashed as UTF-8
    ],
)
def test_stable_hash_golden(value, golden):
    assert c.stable_hash(value) == golden
    # The documented definition: blake2b-64 of the UTF-8 bytes, little-endian, top bit cleared.
    digest = hashlib.blake2b(value.encode("utf-8"), digest_size=8).digest()
    assert golden == int.from_bytes(digest, "little") & (2**63 - 1)


def test_action_type_codes_golden():
    assert {a.name: int(a) for a in ActionType} == {
        "IMPRESSION": 1,
        "VIEW": 2,
        "CLICK": 3,
        "CONVERSION": 4,
        "TAG": 5,
    }
    assert c.NUM_ACTION_TYPES == 6


def test_history_record_bytes_golden():
    rec = HistoryRecord(TS, ActionType.CLICK, 1, 2, 3, 4.5, (0.5, -1.25))
    golden = (
        b"\x01"  # version u8
        + b"\x03"  # action u8 (CLICK)
        + b"\x02\x00"  # content_dim u16
        + TS_LE  # timestamp_ms i64
        + (1).to_bytes(8, "little")  # item_hash i64
        + (2).to_bytes(8, "little")  # surface_hash i64
        + (3).to_bytes(8, "little")  # event_hash i64
        + bytes.fromhex("00009040")  # value f32 4.5
        + bytes.fromhex("0038")  # float16 0.5
        + bytes.fromhex("00bd")  # float16 -1.25
    )
    assert rec.encode() == golden
    assert golden.hex() == (
        "0103020000dc20749701000001000000000000000200000000000000030000000000000000009040003800bd"
    )
    assert HistoryRecord.decode(golden) == rec
    plain = HistoryRecord(TS, ActionType.CLICK, 1, 2, 3)
    assert plain.encode() == golden[:1] + b"\x03\x00\x00" + golden[4:36] + b"\x00\x00\x00\x00"
    assert len(plain.encode()) == 40


def test_negative_hashes_are_signed_little_endian():
    rec = HistoryRecord(TS, ActionType.VIEW, -1, -2, 2**63 - 1)
    raw = rec.encode()
    assert raw[12:20] == b"\xff" * 8
    assert raw[20:28] == bytes.fromhex("feffffffffffffff")
    assert raw[28:36] == bytes.fromhex("ffffffffffffff7f")
    assert HistoryRecord.decode(raw) == rec


@pytest.mark.parametrize(
    ("dtype", "code", "values"),
    [
        (EmbeddingDType.FLOAT16, b"\x01", bytes.fromhex("003c00c0")),  # f16 1.0, -2.0
        (EmbeddingDType.FLOAT32, b"\x02", bytes.fromhex("0000803f000000c0")),  # f32 1.0, -2.0
    ],
)
def test_embedding_record_bytes_golden(dtype, code, values):
    rec = EmbeddingRecord((1.0, -2.0), "m1", TS + 5, TS, 3, dtype)
    golden = (
        b"LLEM"  # magic
        + b"\x01"  # version u8
        + code  # dtype u8
        + b"\x02\x00"  # model_version length u16
        + b"\x02\x00\x00\x00"  # dim u32
        + bytes([TS_LE[0] + 5])
        + TS_LE[1:]  # computed_at_ms i64
        + TS_LE  # newest_event_ms i64
        + b"\x03\x00\x00\x00"  # history_length u32
        + b"m1"  # model_version utf-8
        + values
    )
    assert rec.encode() == golden
    assert EmbeddingRecord.decode(golden, expected_dim=2) == rec


def test_user_event_json_golden():
    ev = c.UserEvent(
        event_id="e1",
        user_id="u1",
        timestamp_ms=TS,
        action_type="click",
        item_id="ad:7",
        content_embedding=[0.5],
        value=2.0,
        metadata={"k": "v"},
    )
    golden = (
        b'{"event_id":"e1","user_id":"u1","timestamp_ms":1750000000000,"action_type":"click",'
        b'"item_id":"ad:7","surface":"feed","content_embedding":[0.5],"value":2.0,'
        b'"metadata":{"k":"v"},"schema_version":1}'
    )
    assert ev.encode() == golden
    assert ev.kafka_key() == b"u1"
    assert c.UserEvent.decode(golden) == ev
    rec = ev.to_history_record()
    assert (rec.item_hash, rec.surface_hash, rec.event_hash) == (
        4927627276576415829,
        3912719938179863385,
        292540415853092123,
    )
    # An int action code decodes to the same event as its name.
    by_code = golden.replace(b'"click"', b"3")
    assert c.UserEvent.decode(by_code) == ev


def test_key_layout_golden():
    assert c.history_key("user-42", "eng") == "llatte:u:{user-42}:hist:eng"
    assert c.history_key("user-42", "imp") == "llatte:u:{user-42}:hist:imp"
    assert c.events_seen_key("user-42") == "llatte:u:{user-42}:since_emb"
    assert c.content_embedding_key("ad:7") == "llatte:content:ad:7"
    assert (c.EMBEDDING_FIELD_RECORD, c.EMBEDDING_FIELD_NEWEST, c.EMBEDDING_FIELD_COMPUTED) == (
        "record",
        "newest_event_ms",
        "computed_at_ms",
    )
