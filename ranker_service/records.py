"""Vectorised decoders for the contract's Redis records: numpy views over the raw bytes.

``shared_model.contract`` holds the reference decoders (``HistoryRecord.decode``,
``EmbeddingRecord.decode``: stdlib ``struct``, one Python object per record). The ranker reads
about 800 history records per request, so here all records of one length are decoded by a
single ``np.frombuffer`` over a structured dtype that mirrors the contract's layout, and the
checks the reference makes (length, version, content width, action type, finite embedding)
are made on whole columns. A property test holds both to the same accept/reject decisions and
the same values.

Shape legend: R records read, T kept (most recent), E content width, U embedding width.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from shared_model.contract import (
    HISTORY_RECORD_VERSION,
    ActionType,
    ContractError,
    EmbeddingDType,
    parse_embedding_header,
)
from shared_model.features import EventBatch

# contract._HISTORY_HEADER "<BBHqqqqf": version, action, content_dim, timestamp_ms, item_hash,
# surface_hash, event_hash, value; then content_dim float16 values.
_HISTORY_HEADER_FIELDS = [
    ("version", "u1"),
    ("action", "u1"),
    ("dim", "<u2"),
    ("timestamp_ms", "<i8"),
    ("item_hash", "<i8"),
    ("surface_hash", "<i8"),
    ("event_hash", "<i8"),
    ("value", "<f4"),
]
HISTORY_HEADER_SIZE = np.dtype(_HISTORY_HEADER_FIELDS).itemsize  # 40
_ACTION_CODES = np.array(sorted(int(a) for a in ActionType), dtype=np.uint8)
_ACTION_OK = np.zeros(256, dtype=bool)  # by action byte: is it an ActionType (a table lookup
_ACTION_OK[_ACTION_CODES] = True  # per record, not np.isin's sort)

_EMB_NUMPY = {EmbeddingDType.FLOAT16: np.dtype("<f2"), EmbeddingDType.FLOAT32: np.dtype("<f4")}


@functools.lru_cache(maxsize=64)
def history_dtype(content_dim: int) -> np.dtype:
    """The structured dtype of one history record with ``content_dim`` float16 values."""
    fields = list(_HISTORY_HEADER_FIELDS)
    if content_dim:
        fields.append(("content", "<f2", (content_dim,)))
    return np.dtype(fields)


@dataclass
class HistoryColumns:
    """Decoded history records as columns, oldest first (R rows)."""

    timestamps_ms: np.ndarray  # (R,) int64
    action_type: np.ndarray  # (R,) int64
    item_hash: np.ndarray  # (R,) int64
    surface_hash: np.ndarray  # (R,) int64
    event_hash: np.ndarray  # (R,) int64
    value: np.ndarray  # (R,) float32
    content: np.ndarray  # (R, E) float32, zeros where a record has no content of width E

    def __len__(self) -> int:
        return self.timestamps_ms.shape[0]

    def take(self, rows: np.ndarray) -> HistoryColumns:
        return HistoryColumns(
            self.timestamps_ms[rows],
            self.action_type[rows],
            self.item_hash[rows],
            self.surface_hash[rows],
            self.event_hash[rows],
            self.value[rows],
            self.content[rows],
        )

    @classmethod
    def empty(cls, content_dim: int) -> HistoryColumns:
        i8 = np.zeros(0, dtype=np.int64)
        return cls(
            i8, i8, i8, i8, i8, np.zeros(0, np.float32), np.zeros((0, content_dim), np.float32)
        )


def _valid(records: np.ndarray, dim: int) -> np.ndarray:
    """(R,) bool: which records of ``dim`` content values ``HistoryRecord.decode`` accepts
    (their byte length already matches): the version, the header's width, the action."""
    return (
        (records["version"] == HISTORY_RECORD_VERSION)
        & (records["dim"] == dim)
        & _ACTION_OK[records["action"]]
    )


def _decode_group(
    raw: bytes, count: int, length: int, content_dim: int
) -> tuple[HistoryColumns, np.ndarray]:
    """``count`` records of one byte length, concatenated -> the valid ones as columns, and
    the (count,) mask of which were valid."""
    dim = (length - HISTORY_HEADER_SIZE) // 2
    if length < HISTORY_HEADER_SIZE or (length - HISTORY_HEADER_SIZE) % 2:
        # No content_dim gives this length: all corrupt (the reference: too short / length).
        return HistoryColumns.empty(content_dim), np.zeros(count, dtype=bool)
    records = np.frombuffer(raw, dtype=history_dtype(dim), count=count)  # (R,) structured
    ok = _valid(records, dim)
    if not ok.all():
        records = records[ok]
    n = records.shape[0]
    if dim == content_dim and dim:
        content = records["content"].astype(np.float32)  # (R, E)
    else:  # another width (or none) reads as no content, as in EventBatch.from_records
        content = np.zeros((n, content_dim), np.float32)
    columns = HistoryColumns(
        records["timestamp_ms"].astype(np.int64),
        records["action"].astype(np.int64),
        records["item_hash"].astype(np.int64),
        records["surface_hash"].astype(np.int64),
        records["event_hash"].astype(np.int64),
        records["value"].astype(np.float32),
        content,
    )
    return columns, ok


_COLUMN_FIELDS = (
    "timestamps_ms",
    "action_type",
    "item_hash",
    "surface_hash",
    "event_hash",
    "value",
    "content",
)


def decode_history_columns(
    members: Sequence[bytes], content_dim: int
) -> tuple[HistoryColumns, int]:
    """Encoded HistoryRecords -> the valid ones as columns (input order kept), #corrupt.

    Accepts and rejects exactly what ``HistoryRecord.decode`` does. All members of one byte
    length are decoded by one ``np.frombuffer``; a user's records normally share one length.
    """
    if not members:
        return HistoryColumns.empty(content_dim), 0
    lengths = np.fromiter(map(len, members), dtype=np.int64, count=len(members))
    first = int(lengths[0])
    if (lengths == first).all():
        columns, _ = _decode_group(b"".join(members), len(members), first, content_dim)
        return columns, len(members) - len(columns)
    # Mixed lengths (another content width, corrupt members): one frombuffer per length, then
    # the rows put back into input order.
    parts, positions = [], []
    for length in np.unique(lengths):
        index = np.flatnonzero(lengths == length)
        raw = b"".join(members[i] for i in index)
        columns, ok = _decode_group(raw, len(index), int(length), content_dim)
        if len(columns):
            parts.append(columns)
            positions.append(index[ok])
    if not parts:
        return HistoryColumns.empty(content_dim), len(members)
    merged = HistoryColumns(
        *(np.concatenate([getattr(p, f) for p in parts]) for f in _COLUMN_FIELDS)
    )
    order = np.argsort(np.concatenate(positions), kind="stable")
    return merged.take(order), len(members) - len(merged)


def recent_history(
    sources: Sequence[Sequence[bytes]], limit: int, content_dim: int
) -> tuple[HistoryColumns, int]:
    """Per-source members (each oldest first) -> the most recent ``limit`` records, #corrupt.

    Equal to decoding every member with ``HistoryRecord.decode`` (skipping the corrupt ones)
    and ``merge_histories(..., limit=limit)``: sorted by (timestamp_ms, event_hash), stable,
    so full ties keep the sources' order.
    """
    members = [m for source in sources for m in source]
    columns, corrupt = decode_history_columns(members, content_dim)
    if limit <= 0:
        return columns.take(np.zeros(0, dtype=np.int64)), corrupt
    order = _newest_last(columns.timestamps_ms, columns.event_hash)
    return columns.take(order[-limit:]), corrupt


def _newest_last(timestamps_ms: np.ndarray, event_hash: np.ndarray) -> np.ndarray:
    """The stable order by (timestamp_ms, event_hash), as indices.

    Each source is already in timestamp order, so a stable argsort of the timestamps is a
    merge (~3 us for 800); only when two timestamps tie does event_hash decide, and then the
    two-key lexsort (~40 us) runs.
    """
    order = np.argsort(timestamps_ms, kind="stable")
    if (np.diff(timestamps_ms[order]) == 0).any():
        order = np.lexsort((event_hash, timestamps_ms))  # stable, last key first
    return order


# EventBatch field -> HistoryRecord field, for the columns recent_event_batch reads
_RECORD_FIELDS = {
    "timestamps_ms": "timestamp_ms",
    "action_type": "action",
    "item_hash": "item_hash",
    "surface_hash": "surface_hash",
    "value": "value",
}
_BATCH_DTYPES = {
    "timestamps_ms": np.int64,
    "action_type": np.int64,
    "item_hash": np.int64,
    "surface_hash": np.int64,
    "value": np.float32,
}


def _left_padded(rows: dict[str, np.ndarray], n: int, length: int, content_dim: int) -> EventBatch:
    """``n`` rows per EventBatch field (oldest first; ``content`` (n, E)) -> a (1, length)
    EventBatch, zeros on the left. Each column is cast once, as it is written; content float16
    -> float32 goes through torch, vectorised on a strided field too."""
    start = length - n
    columns = {}
    for name, np_type in _BATCH_DTYPES.items():
        column = np.zeros((1, length), np_type)
        column[0, start:] = rows[name]
        columns[name] = torch.from_numpy(column)
    valid = np.zeros((1, length), bool)
    valid[0, start:] = True
    content = np.zeros((1, length, content_dim), np.float32)
    if content_dim and n:
        torch.from_numpy(content[0, start:]).copy_(torch.from_numpy(rows["content"]))
    return EventBatch(**columns, content=torch.from_numpy(content), valid=torch.from_numpy(valid))


def recent_event_batch(
    sources: Sequence[Sequence[bytes]], length: int, content_dim: int
) -> tuple[EventBatch, int, int]:
    """Per-source members -> the (1, length) EventBatch of the newest records, #kept, #corrupt.

    ``event_batch(*recent_history(...))`` with fewer copies in the common case, where every
    member has the byte length of a record with ``content_dim`` values: the newest valid
    records are picked as whole 40 + 2E-byte rows and written straight into the batch's
    tensors, each column cast once, in the write. Other inputs take the columns path.
    """
    members = [m for source in sources for m in source]
    size = HISTORY_HEADER_SIZE + 2 * content_dim
    if length <= 0 or (members and set(map(len, members)) != {size}):
        columns, corrupt = recent_history(sources, length, content_dim)
        return event_batch(columns, length, content_dim), len(columns), corrupt
    raw = b"".join(members)
    dtype = history_dtype(content_dim)
    records = np.frombuffer(raw, dtype=dtype)  # (R,) structured, for the checks and the keys
    ok = _valid(records, content_dim)
    rows = None if ok.all() else np.flatnonzero(ok)  # (R',) the valid records' positions
    if rows is not None:
        records = records[rows]
    order = _newest_last(records["timestamp_ms"], records["event_hash"])[-length:]
    if rows is not None:
        order = rows[order]
    # Whole records as opaque rows: one memcpy each (a structured take copies field by field).
    kept = np.frombuffer(raw, dtype=np.dtype((np.void, size)))[order].view(dtype)  # (n,)
    fields = {name: kept[field] for name, field in _RECORD_FIELDS.items()}
    if content_dim:
        fields["content"] = kept["content"]
    n = kept.shape[0]
    return _left_padded(fields, n, length, content_dim), n, len(members) - records.shape[0]


def event_batch(columns: HistoryColumns, length: int, content_dim: int) -> EventBatch:
    """One user's columns (oldest first) -> a left-padded (1, length) EventBatch.

    Equal to ``EventBatch.from_records`` on the decoded records (tested).
    """
    n = min(len(columns), length)
    first = len(columns) - n  # the newest n rows
    rows = {name: getattr(columns, name)[first:] for name in (*_BATCH_DTYPES, "content")}
    return _left_padded(rows, n, length, content_dim)


@dataclass(frozen=True)
class EmbeddingArray:
    """An EmbeddingRecord with its vector as a float32 array (no Python floats)."""

    vector: np.ndarray  # (U,) float32
    model_version: str
    computed_at_ms: int
    newest_event_ms: int
    history_length: int
    dtype: EmbeddingDType


def decode_embedding(raw: bytes, expected_dim: int | None = None) -> EmbeddingArray:
    """``EmbeddingRecord.decode`` with ``np.frombuffer``: same checks, same ContractErrors."""
    h = parse_embedding_header(raw, expected_dim)
    values = np.frombuffer(raw, dtype=_EMB_NUMPY[h.dtype], count=h.dim, offset=h.values_offset)
    vector = values.astype(np.float32)  # float16 and float32 are exact in float32
    if not np.isfinite(vector).all():
        raise ContractError("embedding record contains non-finite values")
    return EmbeddingArray(
        vector, h.model_version, h.computed_at_ms, h.newest_event_ms, h.history_length, h.dtype
    )
