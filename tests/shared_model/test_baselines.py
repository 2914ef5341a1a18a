import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")

from shared_model.contract import ActionType
from shared_model.data.movielens import movielens_dataset
from shared_model.data.movielens_tiny import write_tiny_movielens
from shared_model.data.row_features import HistoryContent, ItemHistory
from shared_model.experiments.baselines import (
    NAMES,
    ItemCounts,
    fit_baselines,
    popularity_features,
)


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    folder = write_tiny_movielens(tmp_path_factory.mktemp("ml"), n_users=40, n_movies=120)
    return movielens_dataset(data_dir=folder, content="genres", negatives=4)


def test_every_baseline_scores_the_test_rows_and_beats_the_base_rate(ds):
    res = fit_baselines(ds, seed=0)
    assert list(res) == list(NAMES)
    for r in res.values():
        assert r.rows == len(ds.test)
    # the base rate is the training rate: NE ~1 (the test rate differs a little)
    assert abs(res["base rate"].ne[0] - 1.0) < 0.02
    # popular movies and the user's favourite genre carry signal in the generated data
    assert res["popularity"].ne[0] < 0.98 and res["popularity"].auc[0] > 0.6
    assert res["logreg"].ne_mean < res["popularity"].ne_mean


def test_popularity_is_leave_one_out_on_training_rows(ds):
    counts = ItemCounts.from_rows(ds)
    train = popularity_features(ds.train, counts, is_train=True)
    test = popularity_features(ds.test, counts, is_train=False)
    # a positive training row does not count itself; a test row sees every training row
    pos = ds.train.labels[:, 0] == 1
    full = np.log1p(counts.positives[ds.train.ad])
    assert np.all(train[pos, 0] < full[pos, 0]) and np.all(train[~pos, 0] == full[~pos, 0])
    np.testing.assert_array_equal(test, np.log1p(counts.positives[ds.test.ad]))


def test_item_counts_are_causal(ds):
    items = ItemHistory(ds)
    rows = np.arange(0, len(ds.test), 7)
    ad, t = ds.test.ad[rows], ds.test.time_ms[rows]
    got = items.counts(ad, t)
    # reference: scan the log for each row
    rated = ds.log.action_type != int(ActionType.TAG)
    for k, (a, ts) in enumerate(zip(ad, t, strict=True)):
        mine = rated & (ds.log.item_hash == ds.candidates.ad_hash[a])
        assert got[k, 0] == np.sum(mine & (ds.log.timestamps_ms < ts))
        liked = mine & (ds.log.action_type == int(ActionType.CONVERSION))
        assert got[k, 1] == np.sum(liked & (ds.log.timestamps_ms < ts))


def test_history_content_matches_a_direct_mean(ds):
    hist = HistoryContent(ds)
    users, times = ds.test.user[:50], ds.test.time_ms[:50]
    ends = ds.log.history_end(users, times)
    cand = ds.candidates.content[ds.test.ad[:50]].astype(np.float64)
    feats = hist.features(users, ends, cand)
    events = ds.log.gather(users, ends, 50)
    valid = events.valid.numpy()[..., None]
    mean = (events.content.numpy() * valid).sum(1) / np.maximum(valid.sum(1), 1)
    cos = torch.nn.functional.cosine_similarity(
        torch.from_numpy(mean), torch.from_numpy(cand), dim=1, eps=1e-12
    ).numpy()
    np.testing.assert_allclose(feats[:, 2], cos, atol=1e-5)
    np.testing.assert_allclose(feats[:, 0], ends - ds.log.offsets[users])
