"""Random but valid model inputs for shared_model tests (seeded by the caller)."""

from __future__ import annotations

import torch

from shared_model.config import LLaTTEConfig, tiny_config
from shared_model.features import Candidates, Context, EventBatch, UpstreamFeature
from shared_model.modules.mla import MultiHeadLatentAttention

NOW_MS = 1_750_000_000_000


def random_events(cfg: LLaTTEConfig, lengths: list[int], T: int | None = None) -> EventBatch:
    """Left-padded histories with the given true lengths, ages up to ~12 days, oldest first."""
    T = T or cfg.max_seq_len
    B = len(lengths)
    ev = EventBatch.empty(B, T, cfg.content_dim)
    ages = torch.randint(0, 10**9, (B, T)).sort(dim=1, descending=True).values
    ev.timestamps_ms[:] = NOW_MS - ages
    ev.action_type[:] = torch.randint(1, 6, (B, T))
    ev.item_hash[:] = torch.randint(0, 2**62, (B, T))
    ev.surface_hash[:] = torch.randint(0, 2**62, (B, T))
    ev.value[:] = torch.randn(B, T)
    ev.content[:] = torch.randn(B, T, cfg.content_dim)
    for b, n in enumerate(lengths):
        ev.valid[b, T - n :] = True
    return ev


def random_context(B: int) -> Context:
    return Context(
        request_time_ms=torch.full((B,), NOW_MS),
        user_hash=torch.randint(0, 2**62, (B,)),
        surface_hash=torch.randint(0, 2**62, (B,)),
        device_hash=torch.randint(0, 2**62, (B,)),
    )


def random_candidates(cfg: LLaTTEConfig, N: int) -> Candidates:
    return Candidates(
        ad_hash=torch.randint(0, 2**62, (N,)),
        advertiser_hash=torch.randint(0, 2**62, (N,)),
        content=torch.randn(N, cfg.content_dim),
        has_content=torch.rand(N) > 0.3,
        floats=torch.rand(N, cfg.n_candidate_floats) * 10,
    )


def random_upstream(cfg: LLaTTEConfig, B: int, present: bool = True) -> UpstreamFeature:
    return UpstreamFeature(torch.randn(B, cfg.d_upstream), torch.full((B,), present))


def tiny_mla() -> MultiHeadLatentAttention:
    """A small MLA (3 heads of 5, latent rank 7), eval mode, weights well away from identity so
    that differences between its forms would show. Seeds the global generator with 0."""
    torch.manual_seed(0)
    attn = MultiHeadLatentAttention(tiny_config(n_heads=3, head_dim=5, kv_lora_rank=7))
    for p in attn.parameters():
        torch.nn.init.normal_(p, std=0.5)
    return attn.eval()


def record_attention_calls(monkeypatch) -> list[tuple[str, bool]]:
    """Every MultiHeadLatentAttention call from now on, in order, as (its impl, whether its
    first segment, the prefix, comes without a mask)."""
    calls: list[tuple[str, bool]] = []
    forward = MultiHeadLatentAttention.forward

    def spy(self, x, segments, impl="sdpa"):
        calls.append((impl, segments[0][1] is None))
        return forward(self, x, segments, impl)

    monkeypatch.setattr(MultiHeadLatentAttention, "forward", spy)
    return calls
