"""EventBatch.from_records against a per-record reference: padding, truncation, content widths."""

from __future__ import annotations

import random

import torch

from shared_model.contract import ActionType, HistoryRecord
from shared_model.features import EventBatch


def _reference(histories: list[list[HistoryRecord]], length: int, dim: int) -> EventBatch:
    batch = EventBatch.empty(len(histories), length, dim)
    for b, records in enumerate(histories):
        kept = records[-length:] if length else []
        for j, r in enumerate(kept):
            t = length - len(kept) + j
            batch.timestamps_ms[b, t] = r.timestamp_ms
            batch.action_type[b, t] = int(r.action_type)
            batch.item_hash[b, t] = r.item_hash
            batch.surface_hash[b, t] = r.surface_hash
            batch.value[b, t] = r.value
            batch.valid[b, t] = True
            if dim and r.content is not None and len(r.content) == dim:
                batch.content[b, t] = torch.tensor(r.content, dtype=torch.float32)
    return batch


def _record(rng: random.Random, i: int, dim: int) -> HistoryRecord:
    width = rng.choice([dim, dim, dim, 0, dim + 1])  # some without content, some too wide
    content = tuple(rng.uniform(-3, 3) for _ in range(width)) if width else None
    return HistoryRecord(
        1_700_000_000_000 + 1000 * i, rng.choice(list(ActionType)), rng.getrandbits(62),
        rng.getrandbits(62), rng.getrandbits(62), rng.uniform(0, 5), content,
    )  # fmt: skip


def test_from_records_matches_the_per_record_reference() -> None:
    rng = random.Random(0)
    dim = 8
    histories = [[_record(rng, i, dim) for i in range(n)] for n in (0, 1, 5, 12, 30)]
    for length in (0, 1, 7, 12, 40):
        got = EventBatch.from_records(histories, length, dim)
        want = _reference(histories, length, dim)
        for name in ("timestamps_ms", "action_type", "item_hash", "surface_hash", "value",
                     "valid", "content"):  # fmt: skip
            assert torch.equal(getattr(got, name), getattr(want, name)), (length, name)


def test_no_content_width_means_no_content_tensor_values() -> None:
    rng = random.Random(1)
    histories = [[_record(rng, i, 0) for i in range(4)]]
    got = EventBatch.from_records(histories, 6, 0)
    assert got.content.shape == (1, 6, 0)
    assert got.valid.tolist() == [[False, False, True, True, True, True]]
