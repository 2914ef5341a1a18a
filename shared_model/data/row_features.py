"""Per-row dense features from the event log before each request: popularity, trend, user.

Shape legend: n events in the log, M impressions (rows), A candidate rows, E content width.

One implementation for the simple baselines (``experiments.baselines``) and the models'
``trending`` feature set. Every feature of a row at time t reads only events with
``timestamp < t`` (the leakage rule of ``samples``), so a row never counts its own rating,
and nothing after t (later ratings, the validation or test period) changes it.

``ROW_FLOATS`` are appended to a row's candidate floats (``Impressions.floats``). They are raw
counts and rates: the models' candidate tokenizer applies ``signed_log`` to every candidate
float, so a count c enters the network as log1p(c), as the baselines read it.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from shared_model.contract import ActionType
from shared_model.data.samples import Dataset, Impressions

RECENT_EVENTS = 50  # events of the user's history whose mean content the candidate is compared with
TRENDING_MS = 30 * 86_400_000  # the "trending" window
FEATURE_SETS = ("basic", "trending")  # basic: the candidate table's floats only
ROW_FLOATS = (
    "item ratings",  # the candidate's ratings before t
    "item likes",  # ... of them liked (a conversion)
    "item ratings 30d",  # ratings in [t - 30 days, t)
    "item likes 30d",
    "item like rate",  # (likes + 1) / (ratings + 2)
    "user events",  # the user's events (ratings and tags) before t
    "user like rate",  # (conversions + 1) / (events + 2)
    "content cosine",  # candidate content vs the mean content of the user's last 50 events
)


class ItemHistory:
    """Per candidate: the times of its ratings in the log, so counts before t are O(log n)."""

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
        """(M,) candidate rows, (M,) times -> (M, 4) before t: ratings, likes, and both in the
        last TRENDING_MS."""
        row = ad.astype(np.int64) << 42
        lo, hi, recent = row, row | t, row | np.maximum(t - TRENDING_MS, 0)
        cols = []
        for keys in self.keys:
            before = np.searchsorted(keys, hi)
            cols.append(
                (before - np.searchsorted(keys, lo), before - np.searchsorted(keys, recent))
            )
        (ratings, ratings_30d), (likes, likes_30d) = cols
        return np.stack([ratings, likes, ratings_30d, likes_30d], 1)


class HistoryContent:
    """Prefix sums over the event log, so a row's user features are O(1)."""

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
        """(M,) users, (M,) history ends, (M, E) candidate content -> (M, 3): events before t,
        smoothed conversion rate, cosine of the candidate with the last RECENT_EVENTS' mean."""
        starts = self.log.offsets[users]
        n = ends - starts
        conv_rate = (self.conversions[ends] - self.conversions[starts] + 1.0) / (n + 2.0)
        lo = np.maximum(starts, ends - RECENT_EVENTS)
        k = self.count[ends] - self.count[lo]
        mean = (self.sum[ends] - self.sum[lo]) / np.maximum(k, 1)[:, None]  # (M, E)
        cos = np.zeros(len(users))
        if cand.shape[1] == mean.shape[1] and cand.shape[1]:
            num = (mean * cand).sum(1)
            den = np.linalg.norm(mean, axis=1) * np.linalg.norm(cand, axis=1)
            cos = np.where(den > 0, num / np.maximum(den, 1e-12), 0.0)
        return np.stack([n, conv_rate, cos], 1)


class RowFeatures:
    """The ``ROW_FLOATS`` of any impressions of one dataset."""

    def __init__(self, ds: Dataset) -> None:
        self.ds, self.items, self.users = ds, ItemHistory(ds), HistoryContent(ds)

    def item_counts(self, imps: Impressions) -> np.ndarray:
        """-> (M, 4) float64 counts before each row's time (see ``ItemHistory.counts``)."""
        return self.items.counts(imps.ad, imps.time_ms).astype(np.float64)

    def user_features(self, imps: Impressions) -> np.ndarray:
        """-> (M, 3) float64 (see ``HistoryContent.features``)."""
        ends = self.ds.log.history_end(imps.user, imps.time_ms)
        cand = self.ds.candidates.content[imps.ad].astype(np.float64)
        return self.users.features(imps.user, ends, cand)

    def floats(self, imps: Impressions) -> np.ndarray:
        """-> (M, len(ROW_FLOATS)) float32."""
        c = self.item_counts(imps)
        like_rate = (c[:, 1] + 1.0) / (c[:, 0] + 2.0)
        out = np.concatenate([c, like_rate[:, None], self.user_features(imps)], 1)
        return out.astype(np.float32)


def with_row_floats(ds: Dataset, features: str) -> Dataset:
    """``ds`` with every split's ``Impressions.floats`` set for the ``features`` set."""
    if features not in FEATURE_SETS:
        raise ValueError(f"unknown features {features!r}: one of {FEATURE_SETS}")
    if features == "basic":
        splits = {s: replace(getattr(ds, s), floats=None) for s in ("train", "val", "test")}
    else:
        rf = RowFeatures(ds)
        splits = {
            s: replace(getattr(ds, s), floats=rf.floats(getattr(ds, s)))
            for s in ("train", "val", "test")
        }
    return replace(ds, **splits, meta={**ds.meta, "features": features})
