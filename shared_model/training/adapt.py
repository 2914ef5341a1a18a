"""Fit a model config to a dataset: feature widths from the data, id tables to its vocabulary.

Hashed id tables smaller than a few times their vocabulary make collisions common (9,742
MovieLens movies hashed into 2,003 ad buckets share a row with ~4 others on average); each
table smaller than ``MIN_ROWS_PER_ID`` x its vocabulary grows to the smallest prime at or
above ``ROWS_PER_ID`` x the vocabulary (~6% of ids then share their row).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from shared_model.config import LLaTTEConfig
from shared_model.data.samples import Dataset

MIN_ROWS_PER_ID = 4
ROWS_PER_ID = 8


def next_prime(n: int) -> int:
    def is_prime(k: int) -> bool:
        return k > 1 and all(k % d for d in range(2, int(k**0.5) + 1))

    while not is_prime(n):
        n += 1
    return n


def vocabularies(ds: Dataset) -> dict[str, int]:
    """Distinct ids per hashed table of the config."""
    return {
        "item_buckets": len(np.unique(np.concatenate([ds.log.item_hash, ds.candidates.ad_hash]))),
        "ad_buckets": len(np.unique(ds.candidates.ad_hash)),
        "advertiser_buckets": len(np.unique(ds.candidates.advertiser_hash)),
        "user_buckets": len(np.unique(ds.log.user_hash)),
    }


def fit_to_data(cfg: LLaTTEConfig, ds: Dataset) -> tuple[LLaTTEConfig, list[str]]:
    """-> (the config fitted to ``ds``, one line per change made).

    ``content_dim`` (unless 0: content off) and ``n_candidate_floats`` take the data's widths;
    id tables grow as described in the module docstring (they never shrink).
    """
    changes: dict[str, int] = {}
    if cfg.content_dim not in (0, ds.content_dim):
        changes["content_dim"] = ds.content_dim
    if cfg.n_candidate_floats != ds.n_candidate_floats:
        changes["n_candidate_floats"] = ds.n_candidate_floats
    vocab = vocabularies(ds)
    for name, n in vocab.items():
        if getattr(cfg, name) < MIN_ROWS_PER_ID * n:
            changes[name] = next_prime(ROWS_PER_ID * n)
    notes = [
        f"{name} {getattr(cfg, name)} -> {new}"
        + (f" ({vocab[name]} distinct ids)" if name in vocab else " (the data's width)")
        for name, new in changes.items()
    ]
    return replace(cfg, **changes), notes
