"""The absorbed MLA path where the parity tests leave room: no or one query row, three
segments, a shared latent read with per-row masks, rows that read no key of a segment, bf16,
and the folded-weight cache."""

import pytest
import torch

from tests.shared_model.helpers import tiny_mla


@pytest.fixture
def mla():
    return tiny_mla()


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


@pytest.mark.parametrize("grouped", [False, True])
def test_rows_that_read_no_key_of_one_segment(mla, grouped):
    # Row masks that leave a whole segment unread: the other segment takes all the weight.
    torch.manual_seed(2)
    B, G = 4, (2 if grouped else 4)
    x = torch.randn(B, 2, 32)
    prefix = mla.kv_latent(torch.randn(G, 6, 32))
    allowed = torch.rand(G, 1, 6) < 0.7
    allowed[0] = False  # the first key set has no valid key
    allowed[1:, :, -1] = True
    own = mla.kv_latent(x)
    causal = torch.ones(2, 2, dtype=torch.bool).tril()[None]
    segs = [(prefix, allowed), (own, causal)]
    with torch.inference_mode():
        got = mla(x, segs, "absorbed")
        ref = mla(x, segs, "naive")
    assert torch.isfinite(got).all()
    close(got, ref)


def test_two_segment_gradients_match_naive(mla):
    x = torch.randn(3, 2, 32)
    hist = torch.randn(1, 5, 32)
    causal = torch.ones(2, 2, dtype=torch.bool).tril()[None]
    grads = {}
    for impl in ("naive", "absorbed"):
        mla.zero_grad()
        segs = [(mla.kv_latent(hist), None), (mla.kv_latent(x), causal)]
        mla(x, segs, impl).square().sum().backward()
        grads[impl] = [p.grad.clone() for p in mla.parameters()]
    for a, n in zip(grads["absorbed"], grads["naive"], strict=True):
        torch.testing.assert_close(a, n, atol=1e-4, rtol=1e-4)


def test_a_shared_latent_read_with_one_mask_row_per_query_row(mla):
    # G = 1 key set, B = 2 rows each with its own single mask row (A = B, S|1 = 1).
    x = torch.randn(2, 3, 32)
    lat = mla.kv_latent(torch.randn(1, 6, 32))
    allowed = torch.tensor([[[True, False, True, True, False, True]], [[False] * 5 + [True]]])
    with torch.inference_mode():
        got = mla(x, [(lat, allowed)], "absorbed")
        ref = mla(x, [(lat.expand(2, -1, -1), allowed)], "naive")
    close(got, ref)


@pytest.mark.filterwarnings("ignore:Mismatch dtype between input and weight")
@pytest.mark.parametrize("how", ["weights", "autocast"])
def test_bf16_absorbed_matches_naive(mla, how):
    # bf16 weights (as a bf16 ranker loads them) or float32 weights under bf16 autocast.
    x = torch.randn(4, 2, 32)
    hist = torch.randn(1, 6, 32)
    allowed = torch.ones(1, 1, 6, dtype=torch.bool)
    allowed[..., :2] = False
    causal = torch.ones(2, 2, dtype=torch.bool).tril()[None]
    outs = {}
    with torch.inference_mode():
        if how == "weights":
            mla.to(torch.bfloat16)
            x, hist = x.bfloat16(), hist.bfloat16()
        for impl in ("absorbed", "naive"):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=how == "autocast"):
                segs = [(mla.kv_latent(hist), allowed), (mla.kv_latent(x), causal)]
                outs[impl] = mla(x, segs, impl)
    assert outs["absorbed"].dtype == torch.bfloat16
    torch.testing.assert_close(outs["absorbed"].float(), outs["naive"].float(), atol=0.1, rtol=0)
