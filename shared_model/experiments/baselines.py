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

from shared_model.data.row_features import RowFeatures
from shared_model.data.samples import Dataset, Impressions
from shared_model.training.trainer import EvalResult, metrics

log = logging.getLogger(__name__)

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


def popularity_features(imps: Impressions, counts: ItemCounts, is_train: bool) -> np.ndarray:
    """(M, 2) log counts of the candidate's training rows (leave-one-out on training rows)."""
    pos = counts.positives[imps.ad]
    if is_train:  # a training row's own labels never count for it
        pos = pos - imps.labels
    return np.log1p(pos)


def row_features(ds: Dataset, imps: Impressions, rf: RowFeatures) -> np.ndarray:
    """(M, F) float32 features, each from events strictly before the row's request time
    (``data.row_features``; the 30-day like count is the models' only, not read here).

    Popularity here is causal (the log before t), not leave-one-out: a tree reading
    leave-one-out counts learns that "one fewer" means a positive.
    """
    c = rf.item_counts(imps)[:, :3]  # ratings, likes, ratings in the last 30 days
    like_rate = (c[:, 1] + 1.0) / (c[:, 0] + 2.0)
    user = rf.user_features(imps)  # events, like rate, content cosine
    user[:, 0] = np.log1p(user[:, 0])
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
        rf = RowFeatures(ds)
        x["features"] = tuple(row_features(ds, s, rf) for s in (ds.train, ds.test))
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
