"""The LLaTTE sequence module: tokens, query fusion, pyramidal MLA layers and readout.

Shape legend: B batch, T history, N candidates, Q query tokens, D width, C latent rank.

Layer l reads every row of its input as keys/values and keeps, as its output rows, the query
tokens plus the ``pyramid[l]`` most recent events (paper eq. 12). ``pyramid[l] = T`` is full
self-attention, ``0 < pyramid[l] < T`` pyramidal, ``pyramid[l] = 0`` cross-attention.

Events come before the query tokens and attention is causal, so the event rows never depend on
the query tokens. ``encode_history`` runs the event rows once and caches each layer's key/value
latent; ``decode_queries`` then runs any number of query-token sets against that cache. This is
how the ranker scores N candidates for the price of one history (``forward`` is the reference
that runs everything together).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from shared_model.config import LLaTTEConfig
from shared_model.features import Candidates, Context, EventBatch
from shared_model.modules.block import LLaTTEBlock
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
    """Per-layer key/value latents of one encoded history, shared by all candidates."""

    latents: list[torch.Tensor]  # per layer: (1|B, L_l, C)
    valid: list[torch.Tensor]  # per layer: (1|B, L_l) bool


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

    def forward(
        self,
        events: EventBatch,
        ctx: Context,
        cands: Candidates | None = None,
        impl: AttnImpl = "sdpa",
    ) -> torch.Tensor:
        """Reference path, one history per row: (B, T) events -> (B, d_summary) summary."""
        Q = self.cfg.n_query
        x = torch.cat(
            [self.tokenizer(events, ctx.request_time_ms), self.query_tokens(ctx, cands)], dim=1
        )  # (B, T+Q, D)
        valid = torch.cat([events.valid, events.valid.new_ones(x.shape[0], Q)], dim=1)
        for layer, kept in zip(self.layers, self.cfg.pyramid, strict=True):
            S = min(kept, x.shape[1] - Q) + Q
            lat = layer.attn.kv_latent(x)  # (B, L, C)
            x = layer(x[:, -S:], [(lat, pyramid_mask(valid, S))], impl)  # (B, S, D)
            valid = valid[:, -S:]
        return self.readout(x)

    def encode_history(
        self, events: EventBatch, request_time_ms: torch.Tensor, impl: AttnImpl = "sdpa"
    ) -> HistoryCache:
        """Run the event rows alone (they never see the query tokens) and cache the latents."""
        x = self.tokenizer(events, request_time_ms)  # (B, T, D)
        valid = events.valid
        cache = HistoryCache([], [])
        for layer, kept in zip(self.layers, self.cfg.pyramid, strict=True):
            lat = layer.attn.kv_latent(x)  # (B, L, C)
            cache.latents.append(lat)
            cache.valid.append(valid)
            S = min(kept, x.shape[1])
            if S == 0:  # a cross-attention layer: no event rows remain
                x, valid = x[:, :0], valid[:, :0]
                continue
            x = layer(x[:, -S:], [(lat, pyramid_mask(valid, S))], impl)
            valid = valid[:, -S:]
        return cache

    def decode_queries(
        self,
        cache: HistoryCache,
        ctx: Context,
        cands: Candidates | None = None,
        impl: AttnImpl = "absorbed",
    ) -> torch.Tensor:
        """Query tokens of N candidates against one cached history -> (N, d_summary)."""
        x = self.query_tokens(ctx, cands)  # (N, Q, D)
        Q = x.shape[1]
        causal = torch.ones(Q, Q, dtype=torch.bool, device=x.device).tril()[None]  # (1, Q, Q)
        for layer, lat_e, valid_e in zip(self.layers, cache.latents, cache.valid, strict=True):
            segments: list[Segment] = [
                (lat_e, valid_e[:, None, :]),  # every query reads every valid event
                (layer.attn.kv_latent(x), causal),  # and the query tokens before it
            ]
            x = layer(x, segments, impl)
        return self.readout(x)
