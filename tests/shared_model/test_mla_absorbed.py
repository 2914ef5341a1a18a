"""The absorbed MLA path where the parity tests leave room: no or one query row, three
segments, a shared latent read with per-row masks, and the folded-weight cache."""

import pytest
import torch

from shared_model.config import tiny_config
from shared_model.modules.mla import MultiHeadLatentAttention


@pytest.fixture
def mla():
    torch.manual_seed(0)
    attn = MultiHeadLatentAttention(tiny_config(n_heads=3, head_dim=5, kv_lora_rank=7))
    for p in attn.parameters():
        torch.nn.init.normal_(p, std=0.5)
    return attn.eval()


def close(a, b):
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("B", [0, 1])
def test_no_or_one_query_row(mla, B):
    x = torch.randn(B, 3, 32)
    lat = mla.kv_latent(torch.randn(1, 6, 32))
    segs = [(lat, torch.ones(1, 1, 6, dtype=torch.bool))]
    out = mla(x, segs, "absorbed")
    assert out.shape == (B, 3, 32)
    expanded = [(lat.expand(B, -1, -1), torch.ones(B, 3, 6, dtype=torch.bool))]
    close(out, mla(x, expanded, "naive"))


def test_three_segments_of_different_lengths(mla):
    x = torch.randn(2, 2, 32)
    segs = []
    for L in (4, 3, 5):
        allowed = torch.rand(2, 2, L) < 0.7
        allowed[..., 0] = True  # every query row sees something in each segment
        segs.append((mla.kv_latent(torch.randn(2, L, 32)), allowed))
    close(mla(x, segs, "absorbed"), mla(x, segs, "naive"))


def test_a_shared_latent_read_with_a_mask_per_row(mla):
    # One history (G = 1) read by 4 rows, each with its own mask over it (A = B != G).
    x = torch.randn(4, 2, 32)
    lat = mla.kv_latent(torch.randn(1, 6, 32))
    allowed = torch.rand(4, 2, 6) < 0.6
    allowed[..., -1] = True
    shared = mla(x, [(lat, allowed)], "absorbed")
    close(shared, mla(x, [(lat.expand(4, -1, -1), allowed)], "naive"))


def test_folded_weights_are_cached_without_autograd(mla):
    assert all(p.requires_grad for p in mla.parameters())
    with torch.no_grad():
        first = mla.folded_weights()
        again = mla.folded_weights()
    assert first[0] is again[0] and first[1] is again[1]
    with torch.enable_grad():
        live = mla.folded_weights()  # recomputed under autograd, so gradients flow
    assert live[0] is not first[0] and live[0].requires_grad
    close(live[0], first[0])
