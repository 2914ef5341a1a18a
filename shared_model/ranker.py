"""The online ranker: compact pyramidal LLaTTE + DHEN + pCTR/pCVR heads.

Shape legend: B training rows, N candidates, T history, E content width, U upstream width.

The model returns logits; ``losses.multitask_bce`` owns the loss. DHEN reads the sequence
summary, the candidate and context features, and the cached upstream embedding with its
presence flag (a zero vector and flag 0 when the ranker must rank without it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

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
        """One user (batch 1), N candidates: encode the history once -> logits (N, 2).

        ``impl`` runs the prefix and the candidates alike. The absorbed form suits the
        pyramidal prefix as well: its layers keep few query rows against many keys, so
        reading the shared C-wide latent beats up-projecting every key to per-head K and V
        (the whole step 35.3 vs 36.0 ms on a 1-thread Zen 3; docs/benchmarks/scoring-zen3.md
        as of commit b1df0e4, its before/after table).
        """
        if events.shape[0] != 1:
            raise ValueError("score_shared takes one user's history (batch 1)")
        if len(cands) == 0:
            return upstream.embedding.new_zeros(0, self.cfg.n_tasks)
        events, padded = _trim_padding(events)
        return self.score_batched(events, ctx, cands, upstream, padded, impl)

    def score_batched(
        self,
        events: EventBatch,
        ctx: Context,
        cands: Candidates,
        upstream: UpstreamFeature,
        padded: bool,
        impl: AttnImpl = "absorbed",
    ) -> torch.Tensor:
        """G users' prefixes (G, T) and their candidates (G * M,) -> logits (G * M, 2).

        The step ``score_shared`` and ``score_many`` share once their inputs are batched
        (``batch_requests``): one ``encode_history``, one ``decode_queries`` with candidate row
        i reading user i // M's prefix, then DHEN and the heads. Tensors in, a tensor out, so
        ``shared_model.traced`` can record it as one graph.
        """
        cache = self.sequence.encode_history(events, ctx, impl, padded=padded)
        summary = self.sequence.decode_queries(cache, ctx, cands, impl)  # (G*M, d_summary)
        return self._interact(summary, ctx, cands, upstream)

    def score_many(
        self,
        requests: Sequence[tuple[EventBatch, Context, Candidates, UpstreamFeature]],
        impl: AttnImpl = "absorbed",
    ) -> list[torch.Tensor]:
        """G requests (one user each, N_i candidates) in one batch -> per request logits (N_i, 2).

        The G prefixes run in one ``encode_history``, left-padded to the longest valid history
        among them; the candidates run in one ``decode_queries``, padded to M = max N_i per
        user, each reading only its own user's prefix; DHEN and the heads run once over all.
        Equal, up to float summation order, to ``score_shared`` on each request alone.
        """
        if not requests:
            return []
        batch = batch_requests(requests)
        if batch.M == 0:
            return [batch.upstream.embedding.new_zeros(0, self.cfg.n_tasks) for _ in requests]
        logits = self.score_batched(*batch.inputs, batch.padded, impl)
        return batch.split(logits)

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


@dataclass
class Batch:
    """G requests' inputs as one batch (``batch_requests``)."""

    events: EventBatch  # (G, T), T the longest valid history among them
    ctx: Context  # (G,)
    cands: Candidates  # (G * M,): each request's candidates padded to M with zero rows
    upstream: UpstreamFeature  # (G, U)
    padded: bool  # whether any history holds padding (False lets decode skip the mask)
    counts: list[int]  # each request's own N

    @property
    def M(self) -> int:
        return max(self.counts)

    @property
    def inputs(self) -> tuple[EventBatch, Context, Candidates, UpstreamFeature]:
        return self.events, self.ctx, self.cands, self.upstream

    def split(self, out: torch.Tensor) -> list[torch.Tensor]:
        """(G * M, ...) rows -> each request's own (N_i, ...)."""
        rows = out.view(len(self.counts), self.M, *out.shape[1:])
        return [rows[g, :n] for g, n in enumerate(self.counts)]


def batch_requests(
    requests: Sequence[tuple[EventBatch, Context, Candidates, UpstreamFeature]],
) -> Batch:
    """One-user requests -> one batch: histories without their left padding, left-padded to
    the longest among them; candidates padded to M = max N_i. One request is its own batch
    (no copy)."""
    for events, ctx, _, upstream in requests:
        if events.shape[0] != 1 or ctx.user_hash.shape[0] != 1:
            raise ValueError("score_many takes one user's history per request (batch 1)")
        if upstream.embedding.shape[0] != 1:
            raise ValueError("score_many takes one upstream embedding per request")
    counts = [len(r[2]) for r in requests]
    if len(requests) == 1:
        ((events, ctx, cands, upstream),) = requests
        events, padded = _trim_padding(events)
        return Batch(events, ctx, cands, upstream, padded, counts)
    trimmed = [_trim_padding(r[0]) for r in requests]
    length = max(ev.shape[1] for ev, _ in trimmed)
    padded = any(p or ev.shape[1] < length for ev, p in trimmed)
    events = EventBatch.cat([ev for ev, _ in trimmed], length)  # (G, T)
    ctx = Context(
        **{f.name: torch.cat([getattr(r[1], f.name) for r in requests]) for f in fields(Context)}
    )  # (G,)
    upstream = UpstreamFeature(
        torch.cat([r[3].embedding for r in requests]),
        torch.cat([r[3].present for r in requests]),
    )  # (G, U), (G,)
    cands = _pad_candidates([r[2] for r in requests], max(counts))  # (G * M,)
    return Batch(events, ctx, cands, upstream, padded, counts)


def _trim_padding(events: EventBatch) -> tuple[EventBatch, bool]:
    """A one-user history without its left padding, and whether padding is left in it.

    Valid rows never read padding, so it can be dropped outright and the cost follows the true
    history length. A history whose valid rows are not contiguous at the end (not left-padded)
    is kept whole, masked.
    """
    valid = events.valid[0]
    n_valid = int(valid.sum())
    if bool(valid[valid.shape[0] - n_valid :].all()):
        return events.last(n_valid), False
    return events, True


def _pad_candidates(groups: Sequence[Candidates], M: int) -> Candidates:
    """Each request's candidates padded with zero rows to M, concatenated -> (G * M,)."""
    parts: dict[str, list[torch.Tensor]] = {f.name: [] for f in fields(Candidates)}
    for cands in groups:
        short = M - len(cands)
        for name, rows in parts.items():
            t = getattr(cands, name)
            rows.append(t)
            if short:
                rows.append(t.new_zeros(short, *t.shape[1:]))
    return Candidates(**{name: torch.cat(rows) for name, rows in parts.items()})


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
