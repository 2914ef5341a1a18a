"""Contract edges the round-trip and golden tests leave open: which id an error names, the
header-size boundary, undecodable versions, a history limit of 1, keys with extra braces."""

from __future__ import annotations

import struct

import pytest

from shared_model import contract as c
from shared_model.contract import (
    ActionType,
    ContractError,
    EmbeddingDType,
    EmbeddingRecord,
    HistoryRecord,
)


@pytest.mark.parametrize("bad", ["", "a{b", "tab\there"])
def test_key_builders_name_the_bad_id(bad):
    with pytest.raises(ContractError, match=r"^user_id "):
        c.history_key(bad, "eng")
    with pytest.raises(ContractError, match=r"^user_id "):
        c.versioned_embedding_key(bad, "v1")
    with pytest.raises(ContractError, match=r"^content_id "):
        c.content_embedding_key(bad)


def test_a_header_sized_record_is_judged_by_its_content_not_its_size():
    size = struct.calcsize("<4sBBHIqqI")
    with pytest.raises(ContractError, match="too short"):
        c.parse_embedding_header(b"\0" * (size - 1))
    with pytest.raises(ContractError, match="bad magic"):
        c.parse_embedding_header(b"\0" * size)


def test_an_undecodable_model_version_is_a_value_error():
    raw = bytearray(EmbeddingRecord((0.5,) * 4, "vX", 1, 1, 1).encode())
    raw[raw.index(b"vX") + 1] = 0xFF  # not UTF-8
    with pytest.raises(ValueError):  # what every reader catches (ContractError is one too)
        EmbeddingRecord.decode(bytes(raw))
    with pytest.raises(ValueError):
        c.parse_embedding_header(bytes(raw))


def test_non_finite_values_are_refused_by_name():
    raw = bytearray(EmbeddingRecord((0.5,) * 4, "v1", 1, 1, 1, EmbeddingDType.FLOAT32).encode())
    raw[-4:] = struct.pack("<f", float("inf"))
    with pytest.raises(ContractError, match=r"^embedding record contains non-finite values$"):
        EmbeddingRecord.decode(bytes(raw))


def test_merge_with_a_limit_of_one_keeps_the_newest():
    records = [HistoryRecord(1000 + i, ActionType.CLICK, i, 0, i) for i in range(3)]
    assert c.merge_histories(records[::-1], limit=1) == [records[-1]]
    assert c.merge_histories(records, limit=0) == []


def test_user_of_key_reads_the_first_hash_tag():
    assert c.user_of_key("llatte:u:{u1}:tail{x}") == "u1"
    assert c.user_of_key(c.versioned_embedding_key("u-2", "v3").encode()) == "u-2"
    with pytest.raises(ContractError, match="not a per-user key"):
        c.user_of_key("llatte:content:x")


@pytest.mark.parametrize("action", [0, 6, 255])
def test_a_history_record_with_an_unknown_action_is_refused(action):
    raw = bytearray(
        HistoryRecord(1_700_000_000_000, ActionType.CLICK, 1, 2, 3, 1.0, (0.5,)).encode()
    )
    raw[1] = action  # the action byte follows the version byte
    with pytest.raises(ContractError, match=f"unknown action_type {action}"):
        HistoryRecord.decode(bytes(raw))


@pytest.mark.parametrize("dim", [1, 3, 64])
def test_history_records_of_several_content_widths_decode_in_turn(dim):
    record = HistoryRecord(5, ActionType.TAG, 1, 2, 3, 0.25, tuple(float(i) for i in range(dim)))
    assert HistoryRecord.decode(record.encode()) == record
