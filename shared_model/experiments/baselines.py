"""Simple baselines scored on exactly the rows the models are scored on.

* ``base rate``: the training rows' positive rate of each head (NE = 1 by construction, up to
  the test split's own rate);
* ``popularity``: logistic regression on the candidate's log interaction and like counts among
  the training rows (leave-one-out: a training row never counts itself);
* ``logreg`` and ``gbdt`` (scikit-learn's HistGradientBoostingClassifier) on simple features:
  the candidate's rating, like and 30-day rating counts before the request, the user's
  activity and like rate before it, the cosine between the
  candidate's content and the mean content of the user's recent history, the candidate floats.

Every feature of a row is computed from the events strictly before its request time (the same
leakage rule as the models' histories) or from the training rows. scikit-learn is imported
only when a baseline is fitted.

    python -m shared_model.experiments baselines --dataset movielens --rows 20000,3000,6000
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from shared_model.contract import ActionType
from shared_model.data.samples import Dataset, Impressions
from shared_model.training.trainer import EvalResult, metrics

log = logging.getLogger(__name__)

RECENT = 50  # events of the user's history whose mean content the candidate is compared with
NAMES = ("base rate", "popularity", "logreg", "gbdt")


@dataclass
class ItemCounts:
    """Per candidate row: training rows with each label (interaction, like) = 1."""

    positives: np.ndarray  # (A, 2) float64

    @classmethod
    def from_rows(cls, ds: Dataset) -> ItemCounts:
        n = len(ds.candidates.ad_hash)
        pos = np.stack(
            [np.bincount(ds.train.ad, ds.train.labels[:, k], minlength=n) for k in range(2)], 1
        )
        return cls(pos)


class HistoryContent:
    """Prefix sums over the event log, so a row's recent-history mean is O(1)."""

    def __init__(self, ds: Dataset) -> None:
        lg = ds.log
        has = lg.content_row >= 0
        vec = np.zeros((len(lg), lg.content_dim), np.float64)
        vec[has] = lg.content_table[lg.content_row[has]]
        zero = np.zeros((1, lg.content_dim))
        self.sum = np.concatenate([zero, np.cumsum(vec, 0)])  # (n + 1, E)
        self.count = np.concatenate([[0], np.cumsum(has)])  # (n + 1,)
        conv = lg.action_type == int(ActionType.CONVERSION)
        self.conversions = np.concatenate([[0], np.cumsum(conv)])
        self.log = lg

    def features(self, users: np.ndarray, ends: np.ndarray, cand: np.ndarray) -> np.ndarray:
        """-> (M, 3): log events before t, smoothed conversion rate, content cosine."""
        starts = self.log.offsets[users]
        n = ends - starts
        conv_rate = (self.conversions[ends] - self.conversions[starts] + 1.0) / (n + 2.0)
        lo = np.maximum(starts, ends - RECENT)
        k = self.count[ends] - self.count[lo]
        mean = (self.sum[ends] - self.sum[lo]) / np.maximum(k, 1)[:, None]
        cos = np.zeros(len(users))
        if cand.shape[1] == mean.shape[1] and cand.shape[1]:
            num = (mean * cand).sum(1)
            den = np.linalg.norm(mean, axis=1) * np.linalg.norm(cand, axis=1)
            cos = np.where(den > 0, num / np.maximum(den, 1e-12), 0.0)
        return np.stack([np.log1p(n), conv_rate, cos], 1)


class ItemHistory:
    """Per candidate: the times of its ratings in the log, so counts before t are O(log n)."""

    RECENT_MS = 30 * 86_400_000  # the "trending" window

    def __init__(self, ds: Dataset) -> None:
        lg, cand = ds.log, ds.candidates.ad_hash
        order = np.argsort(cand)
        pos = np.searchsorted(cand[order], lg.item_hash).clip(max=len(cand) - 1)
        known = cand[order][pos] == lg.item_hash
        rated = known & (lg.action_type != int(ActionType.TAG))
        row = order[pos[rated]].astype(np.int64)
        liked = lg.action_type[rated] == int(ActionType.CONVERSION)
        # one sorted key per (candidate row, time): row * 2**42 + t (t < 2**42 ms, year 2109)
        key = (row << 42) | lg.timestamps_ms[rated]
        self.keys = [np.sort(key), np.sort(key[liked])]

    def counts(self, ad: np.ndarray, t: np.ndarray) -> np.ndarray:
        """-> (M, 3) before t: ratings, likes, ratings in the last RECENT_MS."""
        row = ad.astype(np.int64) << 42
        lo, hi, recent = row, row | t, row | np.maximum(t - self.RECENT_MS, 0)
        every, liked = self.keys
        return np.stack(
            [
                np.searchsorted(every, hi) - np.searchsorted(every, lo),
                np.searchsorted(liked, hi) - np.searchsorted(liked, lo),
                np.searchsorted(every, hi) - np.searchsorted(every, recent),
            ],
            1,
        )


def popularity_features(imps: Impressions, counts: ItemCounts, is_train: bool) -> np.ndarray:
    """(M, 2) log counts of the candidate's training rows (leave-one-out on training rows)."""
    pos = counts.positives[imps.ad]
    if is_train:  # a training row's own labels never count for it
        pos = pos - imps.labels
    return np.log1p(pos)


def row_features(
    ds: Dataset, imps: Impressions, items: ItemHistory, hist: HistoryContent
) -> np.ndarray:
    """(M, F) float32 features, each from events strictly before the row's request time.

    Popularity here is causal (the log before t), not leave-one-out: a tree reading
    leave-one-out counts learns that "one fewer" means a positive.
    """
    c = items.counts(imps.ad, imps.time_ms).astype(np.float64)
    like_rate = (c[:, 1] + 1.0) / (c[:, 0] + 2.0)
    ends = ds.log.history_end(imps.user, imps.time_ms)
    user = hist.features(imps.user, ends, ds.candidates.content[imps.ad].astype(np.float64))
    cols = [np.log1p(c), like_rate[:, None], user, ds.candidates.floats[imps.ad]]
    return np.concatenate(cols, 1).astype(np.float32)


def fit_baselines(
    ds: Dataset, seed: int = 0, names=NAMES, weights=(1.0, 1.0)
) -> dict[str, EvalResult]:
    """Fit the ``names`` baselines on ``ds.train``, score them on ``ds.test``."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def logreg():
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))

    models = {  # name -> (model factory, feature set)
        "popularity": (logreg, "popularity"),
        "logreg": (logreg, "features"),
        "gbdt": (
            lambda: HistGradientBoostingClassifier(
                max_iter=100,
                max_leaf_nodes=15,
                min_samples_leaf=500,
                l2_regularization=1.0,
                early_stopping=False,
                random_state=seed,
            ),
            "features",
        ),
    }
    counts = ItemCounts.from_rows(ds)
    x = {
        "popularity": (
            popularity_features(ds.train, counts, True),
            popularity_features(ds.test, counts, False),
        )
    }
    if set(names) & {"logreg", "gbdt"}:
        items, hist = ItemHistory(ds), HistoryContent(ds)
        x["features"] = tuple(row_features(ds, s, items, hist) for s in (ds.train, ds.test))
    y_train, y_test = ds.train.labels, torch.from_numpy(ds.test.labels)
    out = {}
    for name in names:
        if name == "base rate":
            probs = np.broadcast_to(y_train.mean(0), y_test.shape).copy()
        else:
            make, features = models[name]
            x_train, x_test = x[features]
            probs = np.zeros(y_test.shape)
            for k in range(y_test.shape[1]):
                if len(np.unique(y_train[:, k])) < 2:  # one class: its rate is all there is
                    probs[:, k] = y_train[:, k].mean()
                    continue
                model = make().fit(x_train, y_train[:, k])
                probs[:, k] = model.predict_proba(x_test)[:, 1]
        out[name] = metrics(torch.from_numpy(probs), y_test, list(weights))
        log.info("baseline %-10s test %s", name, out[name])
    return out


def rows(results: dict[str, EvalResult]) -> list[dict]:
    """Baseline results as table rows (model, test NE per head and mean, CTR AUC)."""
    return [
        {
            "model": name,
            "test_ne": r.ne_mean,
            "test_ne_ctr": r.ne[0],
            "test_ne_cvr": r.ne[1],
            "test_auc_ctr": r.auc[0],
            "test_auc_cvr": r.auc[1],
        }
        for name, r in results.items()
    ]
