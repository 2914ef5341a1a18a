"""Rows of several requests scored together: the grouping rule every module shares.

When G users are scored in one batch of N = G * M candidate rows, candidate row i belongs to
user i // M (each user's candidates contiguous, padded to the same M). A user-side tensor with
batch G is then read by N rows without the caller copying it; batch 1 (one user, the common
case) broadcasts and batch N is already per row.
"""

from __future__ import annotations

import torch


def per_row(t: torch.Tensor, n: int) -> torch.Tensor:
    """t (G, ...) with G in {1, n} or G dividing n -> (n, ...), row i reading t[i // (n // G)].

    Batch 1 is an expand (no copy); batch G < n a ``repeat_interleave``.
    """
    groups = t.shape[0]
    if groups == n:
        return t
    if groups == 1:
        return t.expand(n, *t.shape[1:])
    if n % groups:
        raise ValueError(f"{n} rows cannot be split into {groups} equal groups")
    return t.repeat_interleave(n // groups, dim=0)
