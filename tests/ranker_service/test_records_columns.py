"""The ranker's columnar history decoder: exact column dtypes and values (63-bit hashes do not
survive a float64 detour), the empty columns, all-corrupt mixed lengths, and a limit of 1."""

from __future__ import annotations

import numpy as np

from ranker_service.records import (
    HistoryColumns,
    decode_history_columns,
    event_batch,
    recent_history,
)
from shared_model.contract import ActionType, HistoryRecord, stable_hash

E = 4
INT_COLUMNS = ("timestamps_ms", "action_type", "item_hash", "surface_hash", "event_hash")


def records(n: int, content: bool = True) -> list[HistoryRecord]:
    return [
        HistoryRecord(
            timestamp_ms=1_750_000_000_000 + 7 * i,
            action_type=[ActionType.CLICK, ActionType.CONVERSION][i % 2],
            item_hash=stable_hash(f"item-{i}"),  # 63-bit: not exact in float64
            surface_hash=stable_hash("feed"),
            event_hash=stable_hash(f"event-{i}"),
            value=0.1 * i,
            content=tuple(0.5 * j - i for j in range(E)) if content else None,
        )
        for i in range(n)
    ]


def check_columns(cols: HistoryColumns, expected: list[HistoryRecord]) -> None:
    for name in INT_COLUMNS:
        assert getattr(cols, name).dtype == np.int64, name
    assert cols.value.dtype == np.float32 and cols.content.dtype == np.float32
    assert cols.content.shape == (len(expected), E)
    decoded = [HistoryRecord.decode(r.encode()) for r in expected]
    assert cols.timestamps_ms.tolist() == [r.timestamp_ms for r in decoded]
    assert cols.action_type.tolist() == [int(r.action_type) for r in decoded]
    assert cols.item_hash.tolist() == [r.item_hash for r in decoded]
    assert cols.surface_hash.tolist() == [r.surface_hash for r in decoded]
    assert cols.event_hash.tolist() == [r.event_hash for r in decoded]
    assert cols.value.tolist() == [np.float32(r.value) for r in decoded]
    assert cols.content.tolist() == [list(r.content or (0.0,) * E) for r in decoded]


def test_columns_are_exact_and_typed():
    history = records(5)
    assert max(r.item_hash for r in history) > 2**53
    cols, corrupt = decode_history_columns([r.encode() for r in history], E)
    assert corrupt == 0
    check_columns(cols, history)


def test_records_of_another_content_width_read_as_no_content():
    history = records(3, content=False)  # dim 0 records, the model has E
    cols, corrupt = decode_history_columns([r.encode() for r in history], E)
    assert corrupt == 0
    check_columns(cols, history)


def test_empty_columns_are_typed():
    cols = HistoryColumns.empty(E)
    assert len(cols) == 0
    for name in INT_COLUMNS:
        assert getattr(cols, name).dtype == np.int64 and getattr(cols, name).shape == (0,)
    assert cols.value.dtype == np.float32 and cols.value.shape == (0,)
    assert cols.content.dtype == np.float32 and cols.content.shape == (0, E)


def test_all_corrupt_members_of_mixed_lengths():
    cols, corrupt = decode_history_columns([b"x" * 3, b"y" * 41, b"\x00" * 50], E)
    assert corrupt == 3 and len(cols) == 0 and cols.content.shape == (0, E)


def test_a_limit_of_one_keeps_the_newest():
    history = records(4)
    cols, _ = recent_history([[r.encode() for r in history[::-1]]], 1, E)
    check_columns(cols, history[-1:])


def test_mixed_widths_decode_in_input_order():
    """Members of two widths and a corrupt one, interleaved: one frombuffer per width, rows put
    back in input order, the other width read as no content."""
    full, bare = records(4), records(3, content=False)
    members = [full[0], bare[0], full[1], full[2], bare[1], bare[2], full[3]]
    raw = [r.encode() for r in members]
    raw.insert(3, b"\x00" * 7)
    cols, corrupt = decode_history_columns(raw, E)
    assert corrupt == 1
    check_columns(cols, members)


def test_event_batch_keeps_the_newest_rows_left_padded():
    history = records(5)
    cols, _ = decode_history_columns([r.encode() for r in history], E)
    short = event_batch(cols, 3, E)  # more rows than positions: the newest 3
    assert short.timestamps_ms[0].tolist() == [r.timestamp_ms for r in history[-3:]]
    assert short.valid[0].tolist() == [True] * 3
    long = event_batch(cols, 7, E)  # fewer: zeros on the left
    assert long.timestamps_ms[0].tolist() == [0, 0] + [r.timestamp_ms for r in history]
    assert long.valid[0].tolist() == [False, False] + [True] * 5
    assert long.content[0, :2].abs().sum() == 0 and long.content[0, 2:].tolist() == [
        list(r.content) for r in history
    ]
