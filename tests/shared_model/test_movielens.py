import numpy as np
import pytest

from shared_model.contract import MIN_TIMESTAMP_MS, ActionType
from shared_model.data.movielens import (
    MS_PER_DAY,
    cache_dir,
    load_movielens,
    movie_texts,
    movielens_dataset,
)


@pytest.fixture(scope="module")
def ml():
    return load_movielens()


@pytest.fixture(scope="module")
def ds(ml):
    return movielens_dataset(ml, content="none", negatives=2)


def test_counts(ml, ds):
    assert ml.n_users == 610
    assert len(ml.rating) == 100_836
    assert len(ml.movie_ids) == 9_742
    assert len(ml.tag_ms) == 3_683
    assert len(ds.log) == 100_836 + 3_683
    acts = np.bincount(ds.log.action_type, minlength=8)
    assert acts[ActionType.CONVERSION] == int((ml.rating >= 4.0).sum())
    assert acts[ActionType.TAG] == 3_683
    # one positive and two negatives per rating, split by time
    assert len(ds.train) + len(ds.val) + len(ds.test) == 3 * 100_836


def test_time_order_and_shift(ml, ds):
    log = ds.log
    assert ml.time_shift_ms % MS_PER_DAY == 0
    assert log.timestamps_ms.min() >= MIN_TIMESTAMP_MS
    for u in range(log.n_users):
        ts = log.timestamps_ms[log.offsets[u] : log.offsets[u + 1]]
        assert np.all(np.diff(ts) >= 0)
    assert (
        ds.train.time_ms.max()
        < ds.val.time_ms.min()
        <= ds.val.time_ms.max()
        < ds.test.time_ms.min()
    )
    events = list(ml.user_events())
    assert [e.timestamp_ms for e in events] == sorted(e.timestamp_ms for e in events)


def test_no_future_leakage_in_histories(ds):
    rng = np.random.default_rng(0)
    for split in (ds.train, ds.val, ds.test):
        idx = np.sort(rng.choice(len(split), 500, replace=False))
        users, times = split.user[idx], split.time_ms[idx]
        ends = ds.log.history_end(users, times)
        ds.log.assert_no_leakage(ends, users, times)
        batch = ds.log.gather(users, ends, 200)
        ts = batch.timestamps_ms.numpy()
        assert np.all(np.where(batch.valid.numpy(), ts < times[:, None], True))
        # the positive is the rating at that time: never already in the history
        item = ds.candidates.ad_hash[split.ad[idx]]
        pos = split.labels[idx, 0] == 1
        same = (batch.item_hash.numpy() == item[:, None]) & batch.valid.numpy()
        # (a user may re-tag a movie, but never rates it twice)
        rated = same & (batch.action_type.numpy() != int(ActionType.TAG))
        assert not rated[pos].any()


def test_minilm_text_and_cached_vectors(ml):
    texts = movie_texts(ml)
    assert texts[0] == "Toy Story (1995) | Adventure, Animation, Children, Comedy, Fantasy"
    cached = list((cache_dir() / "movielens").glob("minilm-*.npy"))
    if not cached:
        pytest.skip("MiniLM vectors not cached yet (python -m shared_model.experiments warm-up)")
    vecs = np.load(cached[0])
    assert vecs.shape == (9_742, 384)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-3)
