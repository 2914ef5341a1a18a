"""The upstream user model: deep LLaTTE over the long history -> the transfer embedding.

Shape legend: B users (or training rows), T history, U = d_summary transfer width (2048).

Its query tokens are user-only (no candidate exists when a conversion triggers a refresh), so
the summary is a user embedding. For training, the candidate enters only through a DHEN and
task heads on top of that embedding; their NE is the paper's NE_up.
"""

from __future__ import annotations

import torch
from torch import nn

from shared_model.config import LLaTTEConfig
from shared_model.features import Candidates, Context, EventBatch
from shared_model.modules.dhen import DHEN
from shared_model.modules.heads import TaskHeads
from shared_model.modules.mla import AttnImpl
from shared_model.modules.query_tokens import CandidateEmbedding, ContextEmbedding
from shared_model.modules.sequence import LLaTTESequence
from shared_model.ranker import _init_weights


class UpstreamModel(nn.Module):
    def __init__(self, cfg: LLaTTEConfig) -> None:
        super().__init__()
        if not cfg.is_upstream:
            raise ValueError("UpstreamModel needs an upstream-stage config")
        self.cfg = cfg
        self.sequence = LLaTTESequence(cfg)
        self.context = ContextEmbedding(cfg)
        self.candidate = CandidateEmbedding(cfg)
        groups = [self.context.width, self.candidate.width, cfg.d_summary]
        self.dhen = DHEN(groups, cfg.d_ns, cfg.n_ns_layers, cfg.dhen_modules)
        self.heads = TaskHeads(cfg.d_ns, cfg.head_hidden, cfg.n_tasks)
        self.apply(_init_weights(cfg.init_std))

    def embed(self, events: EventBatch, ctx: Context, impl: AttnImpl = "sdpa") -> torch.Tensor:
        """(B, T) history, user-only context -> (B, U) transfer embedding."""
        return self.sequence(events, ctx, None, impl)

    def forward(
        self, events: EventBatch, ctx: Context, cands: Candidates, impl: AttnImpl = "sdpa"
    ) -> torch.Tensor:
        """Training path: -> logits (B, 2) from the embedding and the candidate."""
        return self.predict_from_embedding(self.embed(events, ctx, impl), ctx, cands)

    def predict_from_embedding(
        self, emb: torch.Tensor, ctx: Context, cands: Candidates
    ) -> torch.Tensor:
        """emb (B|1, U), B candidates -> logits (B, 2)."""
        return self.heads(self.dhen([self.context(ctx), self.candidate(cands), emb]))
