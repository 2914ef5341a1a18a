"""The two-stage pipeline: train the upstream, embed (stale) for every row, train the ranker.

NE_up is the upstream model's own NE on the impression task (history as of the request, the
candidate only through its DHEN). NE_down is the ranker's NE with the upstream embedding as a
dense feature, computed as the asynchronous service would: at the user's last high-value event
before the request (``mode="stale"``), or at the request itself (``"fresh"``, an oracle), or
not at all (``"none"``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from shared_model.checkpoint import build_model
from shared_model.config import LLaTTEConfig
from shared_model.data.samples import (
    Dataset,
    Impressions,
    UpstreamTable,
    build_upstream_table,
    context_for,
)
from shared_model.features import UpstreamFeature
from shared_model.ranker import RankerModel
from shared_model.training.trainer import (
    EvalResult,
    FitResult,
    TrainConfig,
    autocast,
    device_auto,
    evaluate,
    fit,
)
from shared_model.upstream import UpstreamModel

log = logging.getLogger(__name__)


@dataclass
class StageResult:
    model: torch.nn.Module
    fit: FitResult
    val: EvalResult
    test: EvalResult


def _rows_fn(ds: Dataset, imps: Impressions, length: int):
    """idx -> (histories, context, candidates, labels), as ``samples.impression_batch`` but
    with every row's history end found once per split instead of once per batch."""
    ends = ds.log.history_end(imps.user, imps.time_ms)

    def rows(idx: np.ndarray):
        users, times = imps.user[idx], imps.time_ms[idx]
        events = ds.log.gather(users, ends[idx], length)
        ctx = context_for(ds.log, users, times, imps.surface_hash[idx])
        cands = ds.candidates_for(imps, idx)
        return events, ctx, cands, torch.from_numpy(imps.labels[idx])

    return rows


def _upstream_fn(ds: Dataset, imps: Impressions, length: int):
    rows = _rows_fn(ds, imps, length)

    def batch(idx: np.ndarray):
        events, ctx, cands, y = rows(idx)
        return (events, ctx, cands), y

    return batch


def ranker_batches(
    ds: Dataset, imps: Impressions, length: int, table: UpstreamTable | None, dim: int
):
    """idx -> the ranker's inputs for those rows (with their upstream embeddings) and labels."""
    rows = _rows_fn(ds, imps, length)

    def batch(idx: np.ndarray):
        events, ctx, cands, y = rows(idx)
        up = UpstreamFeature.absent(len(idx), dim) if table is None else table.feature(idx)
        return (events, ctx, cands, up), y

    return batch


def _check(cfg: LLaTTEConfig, ds: Dataset) -> None:
    if cfg.content_dim not in (0, ds.content_dim):
        raise ValueError(f"config content_dim {cfg.content_dim} != data's {ds.content_dim}")
    if cfg.n_candidate_floats != ds.n_candidate_floats:
        raise ValueError(
            f"config n_candidate_floats {cfg.n_candidate_floats} != data's {ds.n_candidate_floats}"
        )


def train_upstream(
    ds: Dataset, cfg: LLaTTEConfig, tc: TrainConfig, device: torch.device | None = None
) -> StageResult:
    _check(cfg, ds)
    device = device or device_auto()
    torch.manual_seed(tc.seed)
    model = build_model(cfg)
    T = cfg.max_seq_len
    res = fit(
        model,
        _upstream_fn(ds, ds.train, T),
        len(ds.train),
        _upstream_fn(ds, ds.val, T),
        len(ds.val),
        tc,
        cfg.task_weights,
        desc=f"upstream L{cfg.n_layers} d{cfg.d_model} T{T}",
        device=device,
    )
    test = evaluate(
        model, _upstream_fn(ds, ds.test, T), len(ds.test), cfg.task_weights, bf16=tc.bf16
    )
    return StageResult(model, res, res.best, test)


def upstream_tables(
    ds: Dataset,
    upstream: UpstreamModel | None,
    mode: str = "stale",
    bf16: bool = False,
    splits: tuple[str, ...] = ("train", "val", "test"),
) -> dict[str, UpstreamTable | None]:
    """Embeddings for the rows of each of ``splits`` as the ranker will see them."""
    if upstream is None or mode == "none":
        return dict.fromkeys(splits)
    cfg = upstream.cfg
    upstream.eval()
    device = next(upstream.parameters()).device

    @torch.no_grad()
    def embed(events, ctx):
        with autocast(device, bf16):
            return upstream.embed(events.to(device), ctx.to(device)).float()

    return {
        split: build_upstream_table(
            ds, getattr(ds, split), embed, cfg.max_seq_len, cfg.d_summary, mode
        )
        for split in splits
    }


def train_ranker(
    ds: Dataset,
    cfg: LLaTTEConfig,
    tc: TrainConfig,
    tables: dict[str, UpstreamTable | None],
    device: torch.device | None = None,
) -> StageResult:
    _check(cfg, ds)
    device = device or device_auto()
    torch.manual_seed(tc.seed)
    model = build_model(cfg)
    assert isinstance(model, RankerModel)
    T, U = cfg.max_seq_len, cfg.d_upstream
    for t in tables.values():
        if t is not None and t.table.shape[1] != U:
            raise ValueError(f"upstream width {t.table.shape[1]} != ranker d_upstream {U}")
    res = fit(
        model,
        ranker_batches(ds, ds.train, T, tables["train"], U),
        len(ds.train),
        ranker_batches(ds, ds.val, T, tables["val"], U),
        len(ds.val),
        tc,
        cfg.task_weights,
        desc=f"ranker L{cfg.n_layers} d{cfg.d_model} T{T}",
        device=device,
    )
    test = evaluate(
        model,
        ranker_batches(ds, ds.test, T, tables["test"], U),
        len(ds.test),
        cfg.task_weights,
        bf16=tc.bf16,
    )
    return StageResult(model, res, res.best, test)
