"""Query tokens (paper A.2.2): n_q tokens appended after the event tokens.

Online, they carry the candidate ad (ad id, advertiser, content, float features) and the request
context; upstream no candidate exists yet, so they carry user-side features and the context of
the triggering event only. Each token is a learned seed plus its own projection of the features
(Perceiver-style seeds, Jaegle et al. 2021).

The tokens are ordered [context tokens, candidate tokens]. Context tokens see only the user and
the request, so with causal attention they are part of the per-request prefix that all
candidates share; only the candidate tokens are computed per candidate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shared_model.config import LLaTTEConfig
from shared_model.features import Candidates, Context
from shared_model.modules.grouping import per_row
from shared_model.modules.hashed_embedding import HashedEmbedding
from shared_model.modules.time_encoding import HARMONICS, hour_of_day_features
from shared_model.modules.tokenizer import signed_log


class ContextEmbedding(nn.Module):
    """User id, surface, device and hour of day of the request -> (B, width)."""

    def __init__(self, cfg: LLaTTEConfig) -> None:
        super().__init__()
        de = cfg.d_embed
        self.user_emb = HashedEmbedding(cfg.user_buckets, de)
        self.surface_emb = HashedEmbedding(cfg.surface_buckets, de)
        self.device_emb = HashedEmbedding(cfg.device_buckets, de)
        self.width = 3 * de + 2 * len(HARMONICS)

    def forward(self, ctx: Context) -> torch.Tensor:
        return torch.cat(
            [
                self.user_emb(ctx.user_hash),
                self.surface_emb(ctx.surface_hash),
                self.device_emb(ctx.device_hash),
                hour_of_day_features(ctx.request_time_ms),
            ],
            dim=-1,
        )


class CandidateEmbedding(nn.Module):
    """Ad id, advertiser, content embedding (with presence flag) and floats -> (N, width)."""

    def __init__(self, cfg: LLaTTEConfig) -> None:
        super().__init__()
        de = cfg.d_embed
        self.ad_emb = HashedEmbedding(cfg.ad_buckets, de)
        self.advertiser_emb = HashedEmbedding(cfg.advertiser_buckets, de)
        self.content_proj = nn.Linear(cfg.content_dim, de) if cfg.content_dim else None
        self.width = 2 * de + (de + 1 if cfg.content_dim else 0) + cfg.n_candidate_floats

    def forward(self, cands: Candidates) -> torch.Tensor:
        parts = [self.ad_emb(cands.ad_hash), self.advertiser_emb(cands.advertiser_hash)]
        if self.content_proj is not None:
            flag = cands.has_content.to(cands.content.dtype)[:, None]
            parts += [self.content_proj(cands.content) * flag, flag]
        parts.append(signed_log(cands.floats))
        return torch.cat(parts, dim=-1)


class QueryTokens(nn.Module):
    # candidate_proj's weight is split into column blocks (read directly, not called)
    direct_weights = ("candidate_proj",)

    def __init__(self, cfg: LLaTTEConfig) -> None:
        super().__init__()
        self.d_model = cfg.d_model
        self.n_context, self.n_candidate = cfg.n_context_tokens, cfg.n_candidate_tokens
        self.context = ContextEmbedding(cfg)
        self.seeds = nn.Parameter(torch.zeros(cfg.n_query, cfg.d_model))
        self.context_proj = nn.Linear(self.context.width, self.n_context * cfg.d_model)
        self.candidate = CandidateEmbedding(cfg) if self.n_candidate else None
        self.candidate_proj = (
            nn.Linear(self.context.width + self.candidate.width, self.n_candidate * cfg.d_model)
            if self.candidate is not None
            else None
        )

    def context_tokens(self, ctx: Context) -> torch.Tensor:
        """ctx (B,) -> (B, Qc, D): the tokens every candidate of a request shares."""
        B = ctx.user_hash.shape[0]
        tokens = self.context_proj(self.context(ctx)).view(B, self.n_context, self.d_model)
        return self.seeds[: self.n_context] + tokens

    def candidate_tokens(self, ctx: Context, cands: Candidates) -> torch.Tensor:
        """ctx (G,), cands (N,) with N = G * M (see grouping.py) -> (N, Qa, D).

        The projection of [context, candidate] is split into its two column blocks, so the
        context half runs once per user instead of once per candidate.
        """
        if self.candidate is None:
            raise ValueError("this stage's query tokens take no candidate")
        N = cands.ad_hash.shape[0]  # not len(): a traced size stays dynamic
        w_ctx, w_cand = self.candidate_proj.weight.split(
            [self.context.width, self.candidate.width], dim=1
        )
        user_side = F.linear(self.context(ctx), w_ctx, self.candidate_proj.bias)  # (G, Qa*D)
        tokens = per_row(user_side, N) + F.linear(self.candidate(cands), w_cand)  # (N, Qa*D)
        return self.seeds[self.n_context :] + tokens.view(N, self.n_candidate, self.d_model)

    def forward(self, ctx: Context, cands: Candidates | None = None) -> torch.Tensor:
        """All n_q tokens, one set per row -> (B, Q, D)."""
        context = self.context_tokens(ctx)
        if self.candidate is None:
            return context
        if cands is None:
            raise ValueError("the online model's query tokens need candidates")
        B = cands.ad_hash.shape[0]
        return torch.cat([context.expand(B, -1, -1), self.candidate_tokens(ctx, cands)], dim=1)
