"""Task heads: shallow MLPs giving one logit per task (pCTR, pCVR)."""

from __future__ import annotations

import torch
from torch import nn


class TaskHeads(nn.Module):
    def __init__(self, width: int, hidden: int, n_tasks: int) -> None:
        super().__init__()
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(width, hidden), nn.SiLU(), nn.Linear(hidden, 1))
            for _ in range(n_tasks)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, width) -> logits (B, n_tasks); probabilities are sigmoid(logits)."""
        return torch.cat([head(z) for head in self.heads], dim=-1)
