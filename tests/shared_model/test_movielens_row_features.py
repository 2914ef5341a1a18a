"""The ``trending`` row floats: hand-computed values, causality, and how they reach a batch."""

import numpy as np
import pytest

from shared_model.contract import ActionType
from shared_model.data.movielens import movielens_dataset
from shared_model.data.movielens_tiny import write_tiny_movielens
from shared_model.data.row_features import ROW_FLOATS, RowFeatures
from shared_model.data.samples import Impressions, impression_batch

T0, DAY = 1_300_000_000, 86_400  # seconds (2011: no shift of the timestamps)
MOVIES = [(1, "A (2000)", "Action|Comedy"), (2, "B (2001)", "Action"), (3, "C (2002)", "Drama")]
RATINGS = [  # user, movie, rating, seconds
    (1, 1, 5.0, T0),
    (2, 1, 3.0, T0 + DAY),
    (3, 1, 4.0, T0 + 40 * DAY),
    (1, 2, 2.0, T0 + 41 * DAY),
    (2, 2, 4.5, T0 + 41 * DAY + 1),
]
COL = {name: k for k, name in enumerate(ROW_FLOATS)}


def write_folder(path, ratings):
    path.mkdir()
    movies = "".join(f'{m},"{t}",{g}\n' for m, t, g in MOVIES)
    (path / "movies.csv").write_text("movieId,title,genres\n" + movies)
    lines = "".join(f"{u},{m},{r},{t}\n" for u, m, r, t in ratings)
    (path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + lines)
    (path / "tags.csv").write_text("userId,movieId,tag,timestamp\n")
    return path


def rows(user_movie_seconds):
    """Hand-made impressions: (userId, movieId, seconds) -> Impressions (movie row = id - 1)."""
    u, m, t = np.array(user_movie_seconds, np.int64).T
    n = len(u)
    return Impressions(u - 1, t * 1000, m - 1, np.zeros(n, np.int64), np.zeros((n, 2), np.float32))


QUERIES = [
    (3, 1, T0 + 40 * DAY),  # user 3's own rating of A: it does not count itself
    (2, 2, T0 + 41 * DAY + 1),  # user 2's rating of B, one second after user 1's
    (1, 1, T0 + 41 * DAY + 1),  # A after all three of its ratings
    (1, 1, T0 + 30 * DAY),  # exactly 30 days after A's first rating: the window is [t-30d, t)
]


@pytest.fixture(scope="module")
def hand(tmp_path_factory):
    folder = write_folder(tmp_path_factory.mktemp("hand") / "ml", RATINGS)
    return movielens_dataset(data_dir=folder, content="genres", negatives=1)


def test_hand_made_values(hand):
    got = RowFeatures(hand).floats(rows(QUERIES))
    a = 1 / np.sqrt(2)  # A's genre vector is (Action, Comedy) / sqrt 2, B's is (Action)
    expected = [
        # ratings, likes, 30d ratings, 30d likes, like rate, user events, user like rate, cosine
        [2, 1, 0, 0, 2 / 4, 0, 1 / 2, 0.0],
        [1, 0, 1, 0, 1 / 3, 1, 1 / 3, a],  # user 2's one event is A (a 3.0: not a like)
        [3, 2, 1, 1, 3 / 5, 2, 2 / 4, np.sqrt((1 + a) / 2)],  # history mean of A and B vs A
        [2, 1, 2, 1, 2 / 4, 1, 2 / 3, 1.0],
    ]
    np.testing.assert_allclose(got, np.array(expected, np.float32), rtol=1e-6, atol=1e-6)


def test_future_and_simultaneous_events_do_not_change_a_row(hand, tmp_path):
    # another user rates A at the very millisecond of the last queries, and B later; user 3 too
    later = [(4, 1, 5.0, T0 + 41 * DAY + 1), (4, 2, 5.0, T0 + 60 * DAY), (3, 2, 1.0, T0 + 61 * DAY)]
    more = movielens_dataset(
        data_dir=write_folder(tmp_path / "ml", RATINGS + later), content="genres", negatives=1
    )
    before = RowFeatures(hand).floats(rows(QUERIES))
    np.testing.assert_array_equal(RowFeatures(more).floats(rows(QUERIES)), before)
    # the same rows after the new events do see them (the test can fail)
    after = [(u, m, T0 + 62 * DAY) for u, m, _ in QUERIES]
    assert RowFeatures(more).floats(rows(after))[0, COL["item ratings"]] == 4


def test_dataset_rows_match_a_scan_of_the_log(tmp_path):
    folder = write_tiny_movielens(tmp_path / "ml", n_users=20, n_movies=40, ratings_per_user=20)
    ds = movielens_dataset(data_dir=folder, content="genres", negatives=2)
    lg = ds.log
    rated = lg.action_type != int(ActionType.TAG)
    liked = lg.action_type == int(ActionType.CONVERSION)
    for imps in (ds.train, ds.val, ds.test):
        for k in range(0, len(imps), 11):
            a, t, u = imps.ad[k], imps.time_ms[k], imps.user[k]
            movie = rated & (lg.item_hash == ds.candidates.ad_hash[a]) & (lg.timestamps_ms < t)
            recent = movie & (lg.timestamps_ms >= t - 30 * DAY * 1000)
            mine = slice(lg.offsets[u], lg.offsets[u + 1])
            events = lg.timestamps_ms[mine] < t
            f = imps.floats[k]
            assert f[COL["item ratings"]] == movie.sum()
            assert f[COL["item likes"]] == (movie & liked).sum()
            assert f[COL["item ratings 30d"]] == recent.sum()
            assert f[COL["item likes 30d"]] == (recent & liked).sum()
            assert f[COL["user events"]] == events.sum()
            n_likes = (liked[mine] & events).sum()
            assert f[COL["user like rate"]] == pytest.approx((n_likes + 1) / (events.sum() + 2))


def test_truncating_the_log_after_a_time_keeps_the_rows_before_it(tmp_path):
    folder = write_tiny_movielens(tmp_path / "full", n_users=20, n_movies=40, ratings_per_user=20)
    full = movielens_dataset(data_dir=folder, content="genres", negatives=2)
    cut = int(np.quantile(full.train.time_ms, 0.7))
    lines = (folder / "ratings.csv").read_text().splitlines()
    kept = [x for x in lines[1:] if int(x.split(",")[3]) * 1000 <= cut]
    short = tmp_path / "short"
    short.mkdir()
    for name in ("movies.csv", "tags.csv"):
        (short / name).write_text((folder / name).read_text())
    (short / "ratings.csv").write_text("\n".join([lines[0], *kept]) + "\n")
    past = full.train.take(np.nonzero(full.train.time_ms <= cut)[0])
    truncated = movielens_dataset(data_dir=short, content="genres", negatives=2)
    np.testing.assert_array_equal(RowFeatures(truncated).floats(past), past.floats)


def test_feature_sets_reach_the_candidate_floats(hand):
    basic = movielens_dataset(
        data_dir=hand.meta["data_dir"], content="genres", negatives=1, features="basic"
    )
    assert basic.n_candidate_floats == 2 and basic.train.floats is None
    assert hand.n_candidate_floats == 2 + len(ROW_FLOATS)
    imps = hand.train
    idx = np.arange(len(imps))
    _, _, cands, _ = impression_batch(hand, imps, idx, length=4)
    assert cands.floats.shape == (len(idx), hand.n_candidate_floats)
    np.testing.assert_array_equal(cands.floats[:, :2].numpy(), hand.candidates.floats[imps.ad])
    np.testing.assert_array_equal(cands.floats[:, 2:].numpy(), imps.floats)
    with pytest.raises(ValueError, match="unknown features"):
        movielens_dataset(data_dir=hand.meta["data_dir"], content="genres", features="x")
