"""Action tokenizer (paper A.2.1): one d-wide token per event.

x_t = MLP_act(E_type(type_t), E_item(item_t), E_surface(surface_t), E_time(tau_t), content_t,
value_t), then an additive timestamp encoding on a subset of hidden dims.
"""

from __future__ import annotations

import torch
from torch import nn

from shared_model.config import LLaTTEConfig
from shared_model.features import EventBatch
from shared_model.modules.hashed_embedding import HashedEmbedding
from shared_model.modules.time_encoding import TimestampEncoding, age_bucket, age_ms


def signed_log(x: torch.Tensor) -> torch.Tensor:
    """Squash heavy-tailed scalars (prices, dwell times) to a friendly range."""
    return torch.sign(x) * torch.log1p(x.abs())


class ActionTokenizer(nn.Module):
    def __init__(self, cfg: LLaTTEConfig) -> None:
        super().__init__()
        de = cfg.d_embed
        self.type_emb = nn.Embedding(cfg.num_action_types, de)
        self.item_emb = HashedEmbedding(cfg.item_buckets, de)
        self.surface_emb = HashedEmbedding(cfg.surface_buckets, de)
        self.age_emb = nn.Embedding(cfg.age_buckets, de)
        self.age_buckets = cfg.age_buckets
        self.content_proj = nn.Linear(cfg.content_dim, de) if cfg.content_dim else None
        n_in = de * (5 if cfg.content_dim else 4) + 1  # embeddings + signed-log value
        self.mlp = nn.Sequential(
            nn.Linear(n_in, cfg.d_model), nn.SiLU(), nn.Linear(cfg.d_model, cfg.d_model)
        )
        self.time_enc = TimestampEncoding(cfg.d_model, cfg.time_enc_dims)

    def forward(self, events: EventBatch, request_time_ms: torch.Tensor) -> torch.Tensor:
        """events (B, T), request_time_ms (B,) -> tokens (B, T, D)."""
        age = age_ms(events.timestamps_ms, request_time_ms)  # (B, T)
        parts = [
            self.type_emb(events.action_type),
            self.item_emb(events.item_hash),
            self.surface_emb(events.surface_hash),
            self.age_emb(age_bucket(age, self.age_buckets)),
        ]
        if self.content_proj is not None:
            parts.append(self.content_proj(events.content))
        parts.append(signed_log(events.value)[..., None])
        x = self.mlp(torch.cat(parts, dim=-1))  # (B, T, D)
        return self.time_enc(x, events.timestamps_ms, age)
