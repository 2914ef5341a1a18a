"""Loss and metrics: weighted multi-task BCE, Normalized Entropy (paper eq. 2), AUC."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

EPS = 1e-7


def multitask_bce(
    logits: torch.Tensor, labels: torch.Tensor, weights: list[float] | torch.Tensor
) -> torch.Tensor:
    """logits, labels (B, n_tasks) -> weighted sum over tasks of the mean BCE."""
    per_task = F.binary_cross_entropy_with_logits(
        logits, labels.to(logits.dtype), reduction="none"
    ).mean(dim=0)
    w = torch.as_tensor(weights, dtype=per_task.dtype, device=per_task.device)
    return (per_task * w).sum()


def normalized_entropy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """NE = mean log loss / entropy of the empirical positive rate p (paper eq. 2).

    1.0 means no better than always predicting p; lower is better. Undefined (nan) when the
    labels are all 0 or all 1, since then the normaliser is 0.
    """
    y = labels.double().flatten()
    q = probs.double().flatten().clamp(EPS, 1 - EPS)
    if y.numel() == 0:
        return math.nan
    log_loss = -(y * q.log() + (1 - y) * (1 - q).log()).mean().item()
    p = y.mean().item()
    if p <= 0.0 or p >= 1.0:
        return math.nan
    base = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    return log_loss / base


def auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """ROC AUC via the rank statistic (ties get their average rank); nan if one class only."""
    s = scores.double().flatten()
    y = labels.flatten().bool()
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = torch.argsort(s)
    ranks = torch.empty_like(s)
    ranks[order] = torch.arange(1, len(s) + 1, dtype=torch.float64)
    # average ranks over ties
    uniq, inverse = torch.unique(s, return_inverse=True)
    sums = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inverse, ranks)
    counts = torch.zeros(len(uniq), dtype=torch.float64).index_add_(
        0, inverse, torch.ones_like(ranks)
    )
    ranks = (sums / counts)[inverse]
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def transfer_ratio(
    ne_down_base: float, ne_down_new: float, ne_up_base: float, ne_up_new: float
) -> float:
    """tau = dNE_downstream / dNE_upstream (paper eq. 4), with relative NE changes."""
    d_down = (ne_down_new - ne_down_base) / ne_down_base
    d_up = (ne_up_new - ne_up_base) / ne_up_base
    return d_down / d_up if d_up != 0 else math.nan
