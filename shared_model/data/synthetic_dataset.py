"""The synthetic world as a training Dataset: every ad impression in the stream is a row.

Labels are what the stream itself says happened: an ad impression is clicked when a CLICK names
it as its impression, converted when a CONVERSION does. The split is by time: the last
``test_days`` are the test split, the ``val_days`` before them validation, the rest training.
"""

from __future__ import annotations

import numpy as np

from shared_model.contract import ActionType
from shared_model.data.samples import (
    CandidateTable,
    Dataset,
    EventLog,
    Impressions,
    hash_ids,
    temporal_split,
)
from shared_model.data.synthetic import DEFAULT_START_MS, MS_PER_DAY, SyntheticWorld


def synthetic_dataset(
    world: SyntheticWorld,
    days: float = 14.0,
    val_days: float = 2.0,
    test_days: float = 2.0,
    start_ms: int = DEFAULT_START_MS,
    warmup_days: float = 0.0,
) -> Dataset:
    """Stream ``days`` of the world into a Dataset (no impression rows during the warm-up)."""
    c = world.cfg
    end_ms = start_ms + int(days * MS_PER_DAY)
    cols: dict[str, list] = {k: [] for k in ("user", "ts", "action", "row", "surface", "value")}
    imp_key: dict[tuple[int, int], int] = {}
    imp_cols: dict[str, list] = {k: [] for k in ("user", "ts", "ad", "surface", "pc", "pv")}
    clicks: list[int] = []
    convs: list[int] = []
    for e in world.stream_raw(start_ms, end_ms - start_ms):
        row = c.n_items + e.index if e.is_ad else e.index
        for k, v in zip(
            cols, (e.user, e.timestamp_ms, int(e.action), row, e.surface, e.value), strict=True
        ):
            cols[k].append(v)
        if e.action == ActionType.IMPRESSION:
            imp_key[(e.user, e.seq)] = len(imp_cols["user"])
            for k, v in zip(
                imp_cols,
                (e.user, e.timestamp_ms, e.index, e.surface, e.p_click, e.p_conversion),
                strict=True,
            ):
                imp_cols[k].append(v)
        elif e.impression_seq >= 0:
            (clicks if e.action == ActionType.CLICK else convs).append(
                imp_key[(e.user, e.impression_seq)]
            )
    item_hash = np.concatenate(
        [
            hash_ids(world.item_id(i) for i in range(c.n_items)),
            hash_ids(world.ad_id(a) for a in range(c.n_ads)),
        ]
    )
    surface_hash = hash_ids(c.surfaces)
    row = np.array(cols["row"], np.int64)
    log = EventLog.from_columns(
        user=np.array(cols["user"], np.int64),
        timestamps_ms=np.array(cols["ts"], np.int64),
        action_type=np.array(cols["action"], np.int64),
        item_hash=item_hash[row],
        surface_hash=surface_hash[np.array(cols["surface"], np.int64)],
        value=np.array(cols["value"], np.float32),
        content_row=row,
        content_table=np.concatenate([world.item_content, world.ad_content]),
        user_hash=hash_ids(world.user_id(u) for u in range(c.n_users)),
        device_hash=hash_ids(world.device(u) for u in range(c.n_users)),
    )
    m = len(imp_cols["user"])
    labels = np.zeros((m, 2), np.float32)
    labels[clicks, 0] = 1.0
    labels[convs, 1] = 1.0
    imps = Impressions(
        user=np.array(imp_cols["user"], np.int64),
        time_ms=np.array(imp_cols["ts"], np.int64),
        ad=np.array(imp_cols["ad"], np.int64),
        surface_hash=surface_hash[np.array(imp_cols["surface"], np.int64)],
        labels=labels,
        true_probs=np.stack([imp_cols["pc"], imp_cols["pv"]], axis=1).astype(np.float32),
    )
    test_start = end_ms - int(test_days * MS_PER_DAY)
    val_start = test_start - int(val_days * MS_PER_DAY)
    warm_end = start_ms + int(warmup_days * MS_PER_DAY)
    train, val, test = temporal_split(imps.between(warm_end, end_ms), val_start, test_start)
    candidates = CandidateTable(
        ad_hash=hash_ids(world.ad_id(a) for a in range(c.n_ads)),
        advertiser_hash=hash_ids(world.advertiser_id(a) for a in range(c.n_ads)),
        content=world.ad_content.copy(),
        has_content=np.ones(c.n_ads, bool),
        floats=world.ad_floats.copy(),
    )
    meta = {
        "days": days,
        "val_days": val_days,
        "test_days": test_days,
        "start_ms": start_ms,
        "n_events": len(log),
        "world": {**c.__dict__},
    }
    return Dataset("synthetic", log, candidates, train, val, test, meta)
