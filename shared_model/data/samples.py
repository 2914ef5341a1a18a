"""Training samples: columnar event logs, leak-free histories, stale upstream cut-offs, batches.

Shape legend: n events in the log, M impressions (training rows), B batch, T history,
E content width, U upstream embedding width, F candidate floats (the candidate table's, then
the row's own).

Leakage rules, enforced here and nowhere else:

* the history of an impression at time t is the user's events with ``timestamp < t`` (strictly:
  an event at the same millisecond, e.g. the impression itself, is never in its own history);
* the upstream embedding a ranker row sees is the one the asynchronous service would hold: the
  user's history up to and including their last high-value event (a conversion) before t,
  encoded at that event's time (stale, as in production). No such event -> presence flag off.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from shared_model.contract import ActionType, stable_hash
from shared_model.features import (
    UPSTREAM_DEVICE,
    Candidates,
    Context,
    EventBatch,
    UpstreamFeature,
)

HIGH_VALUE_ACTIONS = (int(ActionType.CONVERSION),)


def hash_ids(ids) -> np.ndarray:
    return np.array([stable_hash(str(x)) for x in ids], dtype=np.int64)


@dataclass
class EventLog:
    """All users' events, sorted by (user, time); user u owns rows offsets[u]:offsets[u+1]."""

    offsets: np.ndarray  # (n_users + 1,) int64
    timestamps_ms: np.ndarray  # (n,) int64
    action_type: np.ndarray  # (n,) int64
    item_hash: np.ndarray  # (n,) int64
    surface_hash: np.ndarray  # (n,) int64
    value: np.ndarray  # (n,) float32
    content_row: np.ndarray  # (n,) int64 row of content_table, -1 = no content
    content_table: np.ndarray  # (R, E) float32
    user_hash: np.ndarray  # (n_users,) int64
    device_hash: np.ndarray  # (n_users,) int64

    @classmethod
    def from_columns(
        cls,
        user: np.ndarray,
        timestamps_ms: np.ndarray,
        action_type: np.ndarray,
        item_hash: np.ndarray,
        surface_hash: np.ndarray,
        value: np.ndarray,
        content_row: np.ndarray,
        content_table: np.ndarray,
        user_hash: np.ndarray,
        device_hash: np.ndarray,
    ) -> EventLog:
        order = np.lexsort((timestamps_ms, user))  # stable: equal times keep arrival order
        n_users = len(user_hash)
        counts = np.bincount(user, minlength=n_users)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return cls(
            offsets=offsets,
            timestamps_ms=np.asarray(timestamps_ms, np.int64)[order],
            action_type=np.asarray(action_type, np.int64)[order],
            item_hash=np.asarray(item_hash, np.int64)[order],
            surface_hash=np.asarray(surface_hash, np.int64)[order],
            value=np.asarray(value, np.float32)[order],
            content_row=np.asarray(content_row, np.int64)[order],
            content_table=np.asarray(content_table, np.float32),
            user_hash=np.asarray(user_hash, np.int64),
            device_hash=np.asarray(device_hash, np.int64),
        )

    def __len__(self) -> int:
        return len(self.timestamps_ms)

    @property
    def n_users(self) -> int:
        return len(self.user_hash)

    @property
    def content_dim(self) -> int:
        return self.content_table.shape[1]

    def history_end(self, users: np.ndarray, times_ms: np.ndarray) -> np.ndarray:
        """(M,) -> (M,) exclusive end row: the user's events strictly before ``times_ms``."""
        ends = np.empty(len(users), dtype=np.int64)
        for u in np.unique(users):
            sel = users == u
            lo, hi = self.offsets[u], self.offsets[u + 1]
            ends[sel] = lo + np.searchsorted(self.timestamps_ms[lo:hi], times_ms[sel], "left")
        return ends

    def stale_end(self, users: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """(M,) history ends -> (M,) ends just after the last high-value event before each end.

        -1 where the user has no high-value event before ``end`` (no embedding exists yet).
        """
        n = len(self)
        is_hv = np.isin(self.action_type, HIGH_VALUE_ACTIONS)
        last_hv = np.maximum.accumulate(np.where(is_hv, np.arange(n), -1)) if n else np.array([])
        starts = self.offsets[users]
        prev = np.where(ends > starts, last_hv[np.maximum(ends - 1, 0)] if n else -1, -1)
        return np.where(prev >= starts, prev + 1, -1)

    def gather(self, users: np.ndarray, ends: np.ndarray, length: int) -> EventBatch:
        """The ``length`` events before each exclusive end, left-padded -> EventBatch (B, T)."""
        B = len(users)
        starts = self.offsets[users]  # (B,)
        idx = ends[:, None] - length + np.arange(length)[None, :]  # (B, T)
        valid = idx >= starts[:, None]
        idx = np.where(valid, idx, 0)
        rows = np.where(valid, self.content_row[idx], -1)
        content = np.zeros((B, length, self.content_dim), np.float32)
        has = rows >= 0
        content[has] = self.content_table[rows[has]]
        zero = np.zeros((), np.int64)

        def col(a, fill=zero):
            return torch.from_numpy(np.where(valid, a[idx], fill))

        return EventBatch(
            timestamps_ms=col(self.timestamps_ms),
            action_type=col(self.action_type),
            item_hash=col(self.item_hash),
            surface_hash=col(self.surface_hash),
            value=col(self.value, np.float32(0)),
            content=torch.from_numpy(content),
            valid=torch.from_numpy(valid),
        )

    def assert_no_leakage(self, ends: np.ndarray, users: np.ndarray, times_ms: np.ndarray):
        """Raise if any history row at or after its cut-off time would be read."""
        last = ends - 1
        has = last >= self.offsets[users]
        if np.any(self.timestamps_ms[last[has]] >= times_ms[has]):
            raise AssertionError("a history contains an event at or after its cut-off time")


@dataclass
class CandidateTable:
    """Every ad (or movie) that can be a candidate, by row."""

    ad_hash: np.ndarray  # (A,) int64
    advertiser_hash: np.ndarray  # (A,) int64
    content: np.ndarray  # (A, E) float32
    has_content: np.ndarray  # (A,) bool
    floats: np.ndarray  # (A, F) float32

    def take(self, rows: np.ndarray) -> Candidates:
        return Candidates(
            ad_hash=torch.from_numpy(self.ad_hash[rows]),
            advertiser_hash=torch.from_numpy(self.advertiser_hash[rows]),
            content=torch.from_numpy(self.content[rows]),
            has_content=torch.from_numpy(self.has_content[rows]),
            floats=torch.from_numpy(self.floats[rows]),
        )


@dataclass
class Impressions:
    """Labelled training rows (user, candidate, context, time) -> [click, conversion]."""

    user: np.ndarray  # (M,) int64 user index into the EventLog
    time_ms: np.ndarray  # (M,) int64 request time
    ad: np.ndarray  # (M,) int64 row of the CandidateTable
    surface_hash: np.ndarray  # (M,) int64
    labels: np.ndarray  # (M, 2) float32
    true_probs: np.ndarray | None = None  # (M, 2) the generator's probabilities, when known
    floats: np.ndarray | None = None  # (M, F_row) float32 row floats after the table's, if any

    def __len__(self) -> int:
        return len(self.user)

    def take(self, idx: np.ndarray) -> Impressions:
        return replace(
            self,
            **{
                f.name: None if (v := getattr(self, f.name)) is None else v[idx]
                for f in fields(self)
            },
        )

    def between(self, lo_ms: int, hi_ms: int) -> Impressions:
        return self.take(np.nonzero((self.time_ms >= lo_ms) & (self.time_ms < hi_ms))[0])


@dataclass
class Dataset:
    """An event log, a candidate table, and train / validation / test impressions by time."""

    name: str
    log: EventLog
    candidates: CandidateTable
    train: Impressions
    val: Impressions
    test: Impressions
    meta: dict

    @property
    def content_dim(self) -> int:
        return self.log.content_dim

    @property
    def n_candidate_floats(self) -> int:
        """The candidate table's floats plus the rows' own (``Impressions.floats``)."""
        rows = self.train.floats
        return self.candidates.floats.shape[1] + (0 if rows is None else rows.shape[1])

    def candidates_for(self, imps: Impressions, idx: np.ndarray) -> Candidates:
        """Rows ``idx`` -> their Candidates (N = len(idx)), floats (N, F) with the rows' own."""
        cands = self.candidates.take(imps.ad[idx])
        if imps.floats is not None:
            cands.floats = torch.cat([cands.floats, torch.from_numpy(imps.floats[idx])], 1)
        return cands

    def subsample(self, rows: str, seed: int) -> None:
        """``rows`` "train,val,test": a seeded subsample of each split (0 or "" = all of it)."""
        if not rows:
            return
        rng = np.random.default_rng(seed)
        for split, n in zip(("train", "val", "test"), map(int, rows.split(",")), strict=True):
            imps = getattr(self, split)
            if 0 < n < len(imps):
                setattr(self, split, imps.take(np.sort(rng.choice(len(imps), n, replace=False))))


def temporal_split(
    imps: Impressions, val_start_ms: int, test_start_ms: int, end_ms: int | None = None
) -> tuple[Impressions, Impressions, Impressions]:
    end = np.iinfo(np.int64).max if end_ms is None else end_ms
    lo = int(imps.time_ms.min()) if len(imps) else 0
    return (
        imps.between(lo, val_start_ms),
        imps.between(val_start_ms, test_start_ms),
        imps.between(test_start_ms, end),
    )


# ----------------------------------------------------------------------------------------------
# Batches
# ----------------------------------------------------------------------------------------------


def context_for(log: EventLog, users: np.ndarray, times_ms: np.ndarray, surfaces) -> Context:
    return Context(
        request_time_ms=torch.from_numpy(np.asarray(times_ms, np.int64)),
        user_hash=torch.from_numpy(log.user_hash[users]),
        surface_hash=torch.from_numpy(np.asarray(surfaces, np.int64)),
        device_hash=torch.from_numpy(log.device_hash[users]),
    )


def impression_batch(
    ds: Dataset, imps: Impressions, idx: np.ndarray, length: int
) -> tuple[EventBatch, Context, Candidates, torch.Tensor]:
    """Rows ``idx`` -> (histories as of each request, context, candidates, labels (B, 2))."""
    users, times = imps.user[idx], imps.time_ms[idx]
    ends = ds.log.history_end(users, times)
    events = ds.log.gather(users, ends, length)
    ctx = context_for(ds.log, users, times, imps.surface_hash[idx])
    return events, ctx, ds.candidates_for(imps, idx), torch.from_numpy(imps.labels[idx])


@dataclass
class UpstreamTable:
    """Upstream embeddings for a set of impressions: a deduplicated table and a row per sample."""

    table: np.ndarray  # (K, U) float16, as stored in Redis
    rows: np.ndarray  # (M,) int64 row of table, -1 = absent (presence flag off)
    cutoff_end: np.ndarray  # (M,) exclusive history end the embedding read, -1 = absent

    def feature(self, idx: np.ndarray) -> UpstreamFeature:
        rows = self.rows[idx]
        present = rows >= 0
        emb = np.zeros((len(idx), self.table.shape[1]), np.float32)
        emb[present] = self.table[rows[present]]
        return UpstreamFeature(torch.from_numpy(emb), torch.from_numpy(present))


def upstream_cutoffs(ds: Dataset, imps: Impressions, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Per impression: (history end the upstream reads, time it is encoded at); end -1 = none.

    mode ``stale``: as the asynchronous service, at the last high-value event before the
    request; ``fresh``: at the request itself (an oracle no production system has); ``none``.
    """
    ends = ds.log.history_end(imps.user, imps.time_ms)
    if mode == "fresh":
        return ends, imps.time_ms.copy()
    if mode == "none":
        return np.full(len(imps), -1), np.zeros(len(imps), np.int64)
    if mode != "stale":
        raise ValueError(f"unknown upstream mode {mode!r}")
    cut = ds.log.stale_end(imps.user, ends)
    at = np.where(cut > 0, ds.log.timestamps_ms[np.maximum(cut - 1, 0)], 0)
    return cut, at


def build_upstream_table(
    ds: Dataset,
    imps: Impressions,
    embed: Callable[[EventBatch, Context], torch.Tensor],
    length: int,
    dim: int,
    mode: str = "stale",
    batch_size: int = 256,
) -> UpstreamTable:
    """Encode each distinct (user, cut-off) once with ``embed`` -> an UpstreamTable."""
    cut, at = upstream_cutoffs(ds, imps, mode)
    present = cut >= 0
    keys = np.stack([imps.user, cut, at], axis=1)[present]
    uniq, inverse = (
        np.unique(keys, axis=0, return_inverse=True)
        if len(keys)
        else (np.zeros((0, 3), np.int64), np.zeros(0, np.int64))
    )
    rows = np.full(len(imps), -1, np.int64)
    rows[present] = inverse.reshape(-1)
    table = np.zeros((len(uniq), dim), np.float16)
    for lo in range(0, len(uniq), batch_size):
        u, e, t = uniq[lo : lo + batch_size].T
        events = ds.log.gather(u, e, length)
        # The refresh is triggered by the high-value event: its surface is the context's.
        surf = np.where(e > 0, ds.log.surface_hash[np.maximum(e - 1, 0)], 0)
        if mode == "fresh":
            surf = _surface_at(ds, imps, u, t)
        ctx = context_for(ds.log, u, t, surf)
        ctx.device_hash = torch.full_like(ctx.device_hash, stable_hash(UPSTREAM_DEVICE))
        table[lo : lo + len(u)] = embed(events, ctx).cpu().numpy()
    return UpstreamTable(table, rows, np.where(present, cut, -1))


def _surface_at(ds: Dataset, imps: Impressions, users: np.ndarray, times: np.ndarray):
    # Fresh mode encodes at the request: use that request's surface.
    key = {
        (int(u), int(t)): int(s)
        for u, t, s in zip(imps.user, imps.time_ms, imps.surface_hash, strict=True)
    }
    return np.array([key[(int(u), int(t))] for u, t in zip(users, times, strict=True)], np.int64)
