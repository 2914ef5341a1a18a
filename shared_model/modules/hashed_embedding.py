"""Hashed embedding tables for unbounded id spaces (items, ads, users, advertisers)."""

from __future__ import annotations

import torch
from torch import nn


class HashedEmbedding(nn.Module):
    """Embedding over ``num_buckets`` rows for ids that are already 63-bit hashes.

    Ids arrive as ``contract.stable_hash`` values, which are uniform, so the bucket is a plain
    remainder; collisions are the price of a bounded table and are shared by train and serve.
    """

    def __init__(self, num_buckets: int, dim: int) -> None:
        super().__init__()
        self.num_buckets = num_buckets
        self.table = nn.Embedding(num_buckets, dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # (...) int64 -> (..., dim)
        return self.table(torch.remainder(ids, self.num_buckets))
