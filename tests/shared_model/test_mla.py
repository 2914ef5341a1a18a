import pytest
import torch

from shared_model.config import tiny_config
from shared_model.modules.mla import MultiHeadLatentAttention
from shared_model.modules.sequence import pyramid_mask


@pytest.fixture
def mla():
    torch.manual_seed(0)
    attn = MultiHeadLatentAttention(tiny_config(n_heads=3, head_dim=5, kv_lora_rank=7))
    for p in attn.parameters():  # well away from identity so differences would show
        torch.nn.init.normal_(p, std=0.5)
    return attn


def _inputs(B=2, L=9, S=4):
    x = torch.randn(B, L, 32)
    valid = torch.ones(B, L, dtype=torch.bool)
    valid[0, :3] = False  # left padding on the first row
    return x, valid, S


@pytest.mark.parametrize("impl", ["sdpa", "absorbed"])
def test_impls_match_naive_reference(mla, impl):
    x, valid, S = _inputs()
    lat = mla.kv_latent(x)
    segs = [(lat, pyramid_mask(valid, S))]
    ref = mla(x[:, -S:], segs, "naive")
    out = mla(x[:, -S:], segs, impl)
    assert out.shape == (2, S, 32)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("impl", ["naive", "absorbed", "sdpa"])
def test_shared_segment_equals_expanded_segment(mla, impl):
    # One history latent (batch 1) read by N query rows == the same latent copied N times.
    x_hist = torch.randn(1, 6, 32)
    x_q = torch.randn(5, 2, 32)
    lat_h = mla.kv_latent(x_hist)
    causal = torch.ones(2, 2, dtype=torch.bool).tril()[None]
    allowed_h = torch.ones(1, 1, 6, dtype=torch.bool)
    shared = mla(x_q, [(lat_h, allowed_h), (mla.kv_latent(x_q), causal)], impl)
    copied = mla(
        x_q,
        [
            (lat_h.expand(5, -1, -1), allowed_h.expand(5, 2, 6)),
            (mla.kv_latent(x_q), causal.expand(5, 2, 2)),
        ],
        "naive",
    )
    torch.testing.assert_close(shared, copied, atol=1e-5, rtol=1e-5)


def test_folded_weight_cache_follows_weight_updates(mla):
    x, valid, S = _inputs()
    segs = [(mla.kv_latent(x), pyramid_mask(valid, S))]
    with torch.inference_mode():
        before = mla(x[:, -S:], segs, "absorbed")
        with torch.no_grad():
            mla.wkv_b.weight.mul_(2.0)  # in place: same storage, new version
        after = mla(x[:, -S:], segs, "absorbed")
        ref = mla(x[:, -S:], segs, "naive")
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, ref, atol=1e-5, rtol=1e-5)


def test_absorbed_gradients_match_naive(mla):
    x, valid, S = _inputs()
    segs = [(mla.kv_latent(x), pyramid_mask(valid, S))]
    grads = {}
    for impl in ("naive", "absorbed"):
        mla.zero_grad()
        mla(x[:, -S:], segs, impl).square().sum().backward(retain_graph=True)
        grads[impl] = mla.wkv_b.weight.grad.clone()
    torch.testing.assert_close(grads["absorbed"], grads["naive"], atol=1e-4, rtol=1e-4)


def test_pyramid_mask_is_causal_bottom_right_and_skips_padding():
    valid = torch.tensor([[False, True, True, True, True]])
    m = pyramid_mask(valid, 2)[0]  # rows at positions 3 and 4
    assert m.tolist() == [
        [False, True, True, True, False],
        [False, True, True, True, True],
    ]
    pad_row = pyramid_mask(valid, 5)[0, 0]  # a padding row still reads itself
    assert pad_row.tolist() == [True, False, False, False, False]
