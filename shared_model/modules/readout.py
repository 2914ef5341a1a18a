"""Sequence summary readout (paper A.2.4): a low-rank MLP over the flattened query tokens."""

from __future__ import annotations

import torch
from torch import nn


class LowRankLinear(nn.Module):
    """W = B A with rank r: in*r + r*out parameters instead of in*out (LoRA-style)."""

    def __init__(self, d_in: int, d_out: int, rank: int) -> None:
        super().__init__()
        self.down = nn.Linear(d_in, rank, bias=False)
        self.up = nn.Linear(rank, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))


class LowRankReadout(nn.Module):
    def __init__(self, n_query: int, d_model: int, d_hidden: int, d_out: int, rank: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            LowRankLinear(n_query * d_model, d_hidden, rank),
            nn.SiLU(),
            LowRankLinear(d_hidden, d_out, rank),
        )

    def forward(self, z_raw: torch.Tensor) -> torch.Tensor:
        B, Q, D = z_raw.shape
        return self.net(z_raw.reshape(B, Q * D))  # (B, Q, D) -> (B, Q*D) -> (B, d_out)
