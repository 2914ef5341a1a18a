"""The online ranker: compact pyramidal LLaTTE + DHEN + pCTR/pCVR heads.

Shape legend: B training rows, N candidates, T history, E content width, U upstream width.

The model returns logits; ``losses.multitask_bce`` owns the loss. DHEN reads the sequence
summary, the candidate and context features, and the cached upstream embedding with its
presence flag (a zero vector and flag 0 when the ranker must rank without it).
"""

from __future__ import annotations

import torch
from torch import nn

from shared_model.config import LLaTTEConfig
from shared_model.features import Candidates, Context, EventBatch, UpstreamFeature
from shared_model.modules.dhen import DHEN
from shared_model.modules.heads import TaskHeads
from shared_model.modules.mla import AttnImpl
from shared_model.modules.query_tokens import CandidateEmbedding, ContextEmbedding
from shared_model.modules.sequence import LLaTTESequence


class RankerModel(nn.Module):
    def __init__(self, cfg: LLaTTEConfig) -> None:
        super().__init__()
        if cfg.is_upstream:
            raise ValueError("RankerModel needs an online-stage config")
        self.cfg = cfg
        self.sequence = LLaTTESequence(cfg)
        # DHEN's own sparse/dense features (separate tables from the query tokens').
        self.context = ContextEmbedding(cfg)
        self.candidate = CandidateEmbedding(cfg)
        groups = [self.context.width, cfg.d_upstream + 1, self.candidate.width, cfg.d_summary]
        self.dhen = DHEN(groups, cfg.d_ns, cfg.n_ns_layers, cfg.dhen_modules)
        self.heads = TaskHeads(cfg.d_ns, cfg.head_hidden, cfg.n_tasks)
        self.apply(_init_weights(cfg.init_std))

    def _interact(
        self, summary: torch.Tensor, ctx: Context, cands: Candidates, upstream: UpstreamFeature
    ) -> torch.Tensor:
        flag = upstream.present.to(summary.dtype)[:, None]  # (B|1, 1)
        groups = [
            self.context(ctx),  # (B|1, .) user side: once per request at serving time
            torch.cat([upstream.embedding * flag, flag], dim=-1),  # zeroed when absent
            self.candidate(cands),  # (N, .) candidate side
            summary,  # (N, d_summary)
        ]
        return self.heads(self.dhen(groups))  # (N, n_tasks)

    def forward(
        self,
        events: EventBatch,
        ctx: Context,
        cands: Candidates,
        upstream: UpstreamFeature,
        impl: AttnImpl = "sdpa",
    ) -> torch.Tensor:
        """Training / reference path: row b has its own history and candidate -> (B, 2)."""
        return self._interact(self.sequence(events, ctx, cands, impl), ctx, cands, upstream)

    def score_shared(
        self,
        events: EventBatch,
        ctx: Context,
        cands: Candidates,
        upstream: UpstreamFeature,
        impl: AttnImpl = "absorbed",
    ) -> torch.Tensor:
        """One user (batch 1), N candidates: encode the history once -> logits (N, 2)."""
        if events.shape[0] != 1:
            raise ValueError("score_shared takes one user's history (batch 1)")
        # Histories are left-padded and valid rows never read padding, so one user's padding
        # can be dropped outright: the cost follows the true history length.
        n_valid = int(events.valid.sum())
        if bool(events.valid[0, events.shape[1] - n_valid :].all()):
            events = events.last(n_valid)
        cache = self.sequence.encode_history(events, ctx, "sdpa")
        summary = self.sequence.decode_queries(cache, ctx, cands, impl)  # (N, d_summary)
        return self._interact(summary, ctx, cands, upstream)

    def score_naive(
        self,
        events: EventBatch,
        ctx: Context,
        cands: Candidates,
        upstream: UpstreamFeature,
        impl: AttnImpl = "sdpa",
    ) -> torch.Tensor:
        """One user, N candidates, N independent full forwards (the reference) -> (N, 2)."""
        N = len(cands)
        up = UpstreamFeature(upstream.embedding.expand(N, -1), upstream.present.expand(N))
        return self.forward(events.repeat(N), ctx.repeat(N), cands, up, impl)


def _init_weights(std: float):
    """Linear layers: LeCun normal (std 1/sqrt(fan_in)), which keeps activations at unit scale
    through the chains of narrow projections here (MLA latents, the low-rank readout). A flat
    0.02 shrinks the signal ~50x per low-rank pair and starves the sequence module of gradient.
    Embeddings: N(0, std); the norms after them restore the scale."""

    def init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=module.in_features**-0.5)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)

    return init
