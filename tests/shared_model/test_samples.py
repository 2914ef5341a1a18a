import numpy as np
import pytest
import torch

from shared_model.contract import ActionType
from shared_model.data.samples import EventLog, build_upstream_table, upstream_cutoffs
from shared_model.data.synthetic import SyntheticWorld, WorldConfig
from shared_model.data.synthetic_dataset import synthetic_dataset

CONV, VIEW = int(ActionType.CONVERSION), int(ActionType.VIEW)


def _log() -> EventLog:
    # user 0: t=10 view, 20 conv, 30 view, 30 view, 40 conv; user 1: t=5 view
    return EventLog.from_columns(
        user=np.array([0, 1, 0, 0, 0, 0]),
        timestamps_ms=np.array([40, 5, 10, 20, 30, 30]),
        action_type=np.array([CONV, VIEW, VIEW, CONV, VIEW, VIEW]),
        item_hash=np.array([5, 6, 1, 2, 3, 4]),
        surface_hash=np.zeros(6, np.int64),
        value=np.arange(6, dtype=np.float32),
        content_row=np.array([-1, 0, 0, 1, -1, 1]),
        content_table=np.array([[1.0, 1.0], [2.0, 2.0]], np.float32),
        user_hash=np.array([100, 101]),
        device_hash=np.array([7, 7]),
    )


def test_history_is_strictly_before_and_left_padded():
    log = _log()
    users, times = np.array([0, 0, 1, 0]), np.array([30, 41, 5, 10])
    ends = log.history_end(users, times)
    assert ends.tolist() == [2, 5, 5, 0]  # t=30 excludes both events at 30
    b = log.gather(users, ends, 3)
    assert b.valid.tolist() == [
        [False, True, True],
        [True, True, True],
        [False, False, False],
        [False, False, False],
    ]
    assert b.item_hash[0].tolist() == [0, 1, 2]
    assert b.item_hash[1].tolist() == [3, 4, 5]
    assert b.content[0, 2].tolist() == [2.0, 2.0] and b.content[1, 0].tolist() == [0.0, 0.0]
    log.assert_no_leakage(ends, users, times)


def test_stale_end_is_just_after_the_last_conversion_before_the_request():
    log = _log()
    users, times = np.array([0, 0, 0, 0, 1]), np.array([15, 21, 40, 41, 6])
    stale = log.stale_end(users, log.history_end(users, times))
    # no conversion before 15; the one at 20 for t=21 and t=40 (40 itself is not before 40)
    assert stale.tolist() == [-1, 2, 2, 5, -1]


@pytest.fixture(scope="module")
def ds():
    w = SyntheticWorld(WorldConfig(seed=3, n_users=15, n_items=200, n_ads=30))
    return synthetic_dataset(w, days=6, val_days=1, test_days=1)


def test_stale_embedding_never_reads_an_event_after_its_cutoff(ds):
    imps = ds.train
    cut, at = upstream_cutoffs(ds, imps, "stale")
    ends = ds.log.history_end(imps.user, imps.time_ms)
    present = cut >= 0
    assert present.any() and (~present).any()
    log = ds.log
    last = cut[present] - 1
    # the cut-off event is a conversion of the same user, before the request, at time `at`
    assert np.all(log.action_type[last] == CONV)
    assert np.all(log.timestamps_ms[last] < imps.time_ms[present])
    assert np.all(log.timestamps_ms[last] == at[present])
    assert np.all(last >= log.offsets[imps.user[present]])
    assert np.all(cut[present] <= ends[present])
    # ... and the last one: no conversion between the cut-off and the request
    for c, e in zip(cut[present], ends[present], strict=True):
        assert not np.any(log.action_type[c:e] == CONV)
    # absent rows: the user had no conversion at all before the request
    for u, e in zip(imps.user[~present], ends[~present], strict=True):
        assert not np.any(log.action_type[log.offsets[u] : e] == CONV)

    seen = []

    def embed(events, ctx):  # records the newest event the encoder reads
        ts = torch.where(events.valid, events.timestamps_ms, 0).max(dim=1).values
        assert torch.all(ts <= ctx.request_time_ms)
        seen.append((ts, ctx.request_time_ms))
        return torch.ones(len(ts), 2)

    table = build_upstream_table(ds, imps, embed, length=64, dim=2, mode="stale")
    feat = table.feature(np.arange(len(imps)))
    assert feat.present.numpy().tolist() == present.tolist()
    newest = torch.cat([s[0] for s in seen])
    assert torch.all(newest == torch.cat([s[1] for s in seen]))  # encoded at the conversion
    assert np.all(feat.embedding.numpy()[~present] == 0)
    assert np.all(feat.embedding.numpy()[present] == 1)
