"""A post-norm LLaTTE block (paper eq. 10-11).

Z = RMSNorm(R + MLA(R)),  X = RMSNorm(Z + FFN(Z)), where R are the rows this layer keeps
(the query rows of a pyramidal layer) and MLA reads keys/values from every row of its input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shared_model.config import LLaTTEConfig
from shared_model.modules.mla import AttnImpl, MultiHeadLatentAttention, Segment


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, d_ffn: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(d_model, d_ffn, bias=False)
        self.w3 = nn.Linear(d_model, d_ffn, bias=False)
        self.w2 = nn.Linear(d_ffn, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class LLaTTEBlock(nn.Module):
    def __init__(self, cfg: LLaTTEConfig) -> None:
        super().__init__()
        self.attn = MultiHeadLatentAttention(cfg)
        self.attn_norm = nn.RMSNorm(cfg.d_model)
        self.ffn = SwiGLU(cfg.d_model, cfg.d_ffn)
        self.ffn_norm = nn.RMSNorm(cfg.d_model)

    def forward(self, x: torch.Tensor, segments: list[Segment], impl: AttnImpl) -> torch.Tensor:
        """x (B, S, D): the kept rows; segments: their keys/values -> (B, S, D)."""
        z = self.attn_norm(x + self.attn(x, segments, impl))
        return self.ffn_norm(z + self.ffn(z))
