"""The LLaTTE sequence module: tokens, query fusion, pyramidal MLA layers and readout.

Shape legend: B batch, T history, N candidates, Q query tokens, D width, C latent rank.

Layer l reads every row of its input as keys/values and keeps, as its output rows, the query
tokens plus the ``pyramid[l]`` most recent events (paper eq. 12). ``pyramid[l] = T`` is full
self-attention, ``0 < pyramid[l] < T`` pyramidal, ``pyramid[l] = 0`` cross-attention.

Rows are ordered [events, context query tokens, candidate query tokens] and attention is
causal, so the events and the context tokens (the request's *prefix*) never depend on the
candidate. ``encode_history`` runs the prefix once and caches each layer's key/value latent;
``decode_queries`` then runs only the candidate tokens of N candidates against that cache, in
one batch. This is how the ranker scores N candidates for the price of one history
(``forward`` is the reference that runs everything together, one row per candidate). Several
requests share one pass the same way: G prefixes in one ``encode_history``, their G * M
candidates in one ``decode_queries``, each candidate reading only its own user's prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from shared_model.config import LLaTTEConfig
from shared_model.features import Candidates, Context, EventBatch
from shared_model.modules.block import LLaTTEBlock
from shared_model.modules.grouping import per_row
from shared_model.modules.mla import AttnImpl, Segment
from shared_model.modules.query_tokens import QueryTokens
from shared_model.modules.readout import LowRankReadout
from shared_model.modules.tokenizer import ActionTokenizer


def pyramid_mask(valid: torch.Tensor, kept: int) -> torch.Tensor:
    """Allowed-mask for the last ``kept`` rows attending to all L rows, causally.

    valid (B, L) bool -> (B, kept, L). Row i sits at position L - kept + i; it may read keys at
    or before it that are not padding, and always itself (so a padding row has one key).
    """
    L = valid.shape[1]
    row = torch.arange(L - kept, L, device=valid.device)[:, None]  # (kept, 1)
    col = torch.arange(L, device=valid.device)[None, :]  # (1, L)
    causal = col <= row
    return causal[None] & (valid[:, None, :] | (col == row)[None])


@dataclass
class HistoryCache:
    """G requests' shared prefixes (events, then context query tokens), encoded once.

    ``latents[l]``/``valid[l]`` are the keys/values layer l reads from the prefix; ``context``
    is the final state of the context query tokens, which the readout needs for every candidate.
    ``padded`` is False when no prefix row is padding (the mask can then be skipped).
    """

    latents: list[torch.Tensor]  # per layer: (G, L_l, C)
    valid: list[torch.Tensor]  # per layer: (G, L_l) bool
    context: torch.Tensor  # (G, Qc, D)
    padded: bool = True


class LLaTTESequence(nn.Module):
    def __init__(self, cfg: LLaTTEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tokenizer = ActionTokenizer(cfg)
        self.query_tokens = QueryTokens(cfg)
        self.layers = nn.ModuleList(LLaTTEBlock(cfg) for _ in range(cfg.n_layers))
        self.readout = LowRankReadout(
            cfg.n_query, cfg.d_model, cfg.readout_hidden, cfg.d_summary, cfg.readout_rank
        )

    def _run_layers(
        self,
        x: torch.Tensor,
        valid: torch.Tensor,
        n_tail: int,
        impl: AttnImpl,
        cache: HistoryCache | None = None,
    ) -> torch.Tensor:
        """x (B, T_events + n_tail, D): events then ``n_tail`` always-kept query rows."""
        for layer, kept in zip(self.layers, self.cfg.pyramid, strict=True):
            S = min(kept, x.shape[1] - n_tail) + n_tail  # kept events + the query rows
            lat = layer.attn.kv_latent(x)  # (B, L, C)
            if cache is not None:
                cache.latents.append(lat)
                cache.valid.append(valid)
            if S == 0:  # no rows left to compute (a prefix without query tokens)
                x, valid = x[:, :0], valid[:, :0]
                continue
            x = layer(x[:, -S:], [(lat, pyramid_mask(valid, S))], impl)  # (B, S, D)
            valid = valid[:, -S:]
        return x

    def forward(
        self,
        events: EventBatch,
        ctx: Context,
        cands: Candidates | None = None,
        impl: AttnImpl = "sdpa",
    ) -> torch.Tensor:
        """Reference path, one history per row: (B, T) events -> (B, d_summary) summary."""
        Q = self.cfg.n_query
        tokens = self.tokenizer(events, ctx.request_time_ms)  # (B, T, D)
        queries = self.query_tokens(ctx, cands)  # (B, Q, D)
        x = torch.cat([tokens, queries.expand(tokens.shape[0], -1, -1)], dim=1)  # (B, T+Q, D)
        valid = torch.cat([events.valid, events.valid.new_ones(x.shape[0], Q)], dim=1)
        final = self._run_layers(x, valid, Q, impl)
        return self.readout(final[:, -Q:])  # the query-token positions: (B, Q, D)

    def encode_history(
        self, events: EventBatch, ctx: Context, impl: AttnImpl = "sdpa", padded: bool = True
    ) -> HistoryCache:
        """Run the shared prefix (events, context query tokens) once and cache its latents.

        Causality makes this exact: no prefix row ever reads a candidate token. ``padded=False``
        promises that ``events`` holds no padding (the caller trimmed it), which lets
        ``decode_queries`` skip the prefix mask; True is always correct.
        """
        Qc = self.cfg.n_context_tokens
        x = torch.cat(
            [self.tokenizer(events, ctx.request_time_ms), self.query_tokens.context_tokens(ctx)],
            dim=1,
        )  # (G, T+Qc, D)
        valid = torch.cat([events.valid, events.valid.new_ones(x.shape[0], Qc)], dim=1)
        cache = HistoryCache([], [], x[:, :0], padded)
        final = self._run_layers(x, valid, Qc, impl, cache)
        cache.context = final[:, final.shape[1] - Qc :]  # (G, Qc, D)
        return cache

    def decode_queries(
        self, cache: HistoryCache, ctx: Context, cands: Candidates, impl: AttnImpl = "absorbed"
    ) -> torch.Tensor:
        """N = G * M candidates' query tokens against G cached prefixes -> (N, d_summary).

        Candidate row i reads only user i // M's prefix (see grouping.py); G = 1 is one request.
        """
        x = self.query_tokens.candidate_tokens(ctx, cands)  # (N, Qa, D)
        N, Qa = x.shape[:2]
        causal = torch.ones(Qa, Qa, dtype=torch.bool, device=x.device).tril()[None]  # (1, Qa, Qa)
        for layer, lat_p, valid_p in zip(self.layers, cache.latents, cache.valid, strict=True):
            prefix_mask = valid_p[:, None, :] if cache.padded else None  # (G, 1, L)
            segments: list[Segment] = [
                (lat_p, prefix_mask),  # every candidate token reads its user's (valid) prefix
                (layer.attn.kv_latent(x), causal),  # and its own candidate tokens before it
            ]
            x = layer(x, segments, impl)
        final = torch.cat([per_row(cache.context, N), x], dim=1)  # (N, Q, D)
        return self.readout(final)
