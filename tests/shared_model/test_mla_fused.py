"""The absorbed MLA's fused first segment (the flash kernel merged by log-sum-exp) against the
materialised form it replaces, and when it applies."""

import pytest
import torch

from shared_model.modules.mla import _fusable
from tests.shared_model.helpers import tiny_mla


@pytest.fixture
def mla():
    return tiny_mla()


def both(mla, x, segments, q_lat=None):
    """The fused and the materialised form on the same query latents (x's by default)."""
    with torch.inference_mode():
        q_lat = mla.q_latent(x) if q_lat is None else q_lat
        return mla._absorbed(q_lat, segments, fuse=True), mla._absorbed(q_lat, segments)


def own_tokens(mla, x):
    """Each row's own tokens as a second segment, causal (as decode_queries builds it)."""
    S = x.shape[1]
    return mla.kv_latent(x), torch.ones(S, S, dtype=torch.bool).tril()[None]


@pytest.mark.parametrize(("B", "S", "L"), [(1, 1, 1), (5, 2, 9), (7, 3, 40)])
def test_shared_prefix_and_own_tokens(mla, B, S, L):
    x = torch.randn(B, S, 32)
    prefix = mla.kv_latent(torch.randn(1, L, 32))  # one user's prefix, read by every row
    fused, reference = both(mla, x, [(prefix, None), own_tokens(mla, x)])
    torch.testing.assert_close(fused, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused, mla(x, [(prefix, None), own_tokens(mla, x)], "naive"))


@pytest.mark.parametrize("G", [2, 3])
def test_grouped_prefixes(mla, G):
    # G users' prefixes, M rows each: row b reads user b // M's prefix only.
    M, S, L = 4, 2, 11
    x = torch.randn(G * M, S, 32)
    prefixes = mla.kv_latent(torch.randn(G, L, 32))
    fused, reference = both(mla, x, [(prefixes, None), own_tokens(mla, x)])
    torch.testing.assert_close(fused, reference, atol=1e-5, rtol=1e-5)
    for g in range(G):  # each group alone, as one user's request
        rows = slice(g * M, (g + 1) * M)
        alone, _ = both(mla, x[rows], [(prefixes[g : g + 1], None), own_tokens(mla, x[rows])])
        torch.testing.assert_close(fused[rows], alone, atol=1e-5, rtol=1e-5)


def test_masked_later_segments_and_a_row_that_reads_none_of_them(mla):
    B, S = 4, 2
    x = torch.randn(B, S, 32)
    prefix = mla.kv_latent(torch.randn(1, 6, 32))
    second = mla.kv_latent(torch.randn(B, 3, 32))
    allowed = torch.rand(B, S, 3) < 0.5
    allowed[0] = False  # row 0 reads only the prefix
    third = mla.kv_latent(torch.randn(1, 5, 32))
    fourth = mla.kv_latent(torch.randn(1, 4, 32))  # one key set, a mask per row
    per_row = torch.rand(B, S, 4) < 0.6
    segments = [
        (prefix, None),
        (second, allowed),
        (third, torch.ones(1, 1, 5, dtype=torch.bool)),
        (fourth, per_row),
    ]
    fused, reference = both(mla, x, segments)
    torch.testing.assert_close(fused, reference, atol=1e-5, rtol=1e-5)


def test_rows_far_apart_from_each_other(mla):
    # Each row's exponents are taken relative to its own maximum: one row's scores hundreds
    # above another's must not underflow the other's weights.
    # The latents come out of RMSNorms; scaled here past them, row by row.
    B, S = 4, 2
    scale = torch.tensor([40.0, 0.01, 1.0, 10.0])[:, None, None]
    q_lat = torch.randn(B, S, mla.wq_a.out_features) * scale  # (B, S, R)
    own = torch.randn(B, S, 7) * scale  # (B, S, C): each row's own tokens
    causal = torch.ones(S, S, dtype=torch.bool).tril()[None]
    prefix = torch.randn(1, 5, 7)
    x = torch.zeros(B, S, 32)  # unused: q_lat is given
    fused, reference = both(mla, x, [(prefix, None), (own, causal)], q_lat)
    assert torch.isfinite(fused).all()
    torch.testing.assert_close(fused, reference, atol=1e-4, rtol=1e-4)


def test_scores_far_apart(mla):
    # Scores hundreds apart: most weights underflow to 0, each side of the merge in turn holds
    # the maximum; the merge stays exact and finite.
    x = torch.randn(6, 2, 32) * 30
    prefix = mla.kv_latent(torch.randn(1, 8, 32)) * 30
    fused, reference = both(mla, x, [(prefix, None), own_tokens(mla, x)])
    assert torch.isfinite(fused).all()
    torch.testing.assert_close(fused, reference, atol=1e-4, rtol=1e-4)


def test_when_the_fused_kernel_applies():
    q = torch.randn(2, 1, 3, 7)
    lat = torch.randn(1, 5, 7)
    with torch.inference_mode():
        assert _fusable(q, (lat, None))
        assert _fusable(q, (lat[:, :1], None))  # one key
        assert not _fusable(q, (lat, torch.ones(1, 1, 5, dtype=torch.bool)))  # a mask
        assert not _fusable(q, (lat[:, :0], None))  # no key
        assert not _fusable(q.bfloat16(), (lat.bfloat16(), None))  # not float32
    trained = q.clone().requires_grad_()
    assert not _fusable(trained, (lat, None))  # autograd wanted
    with torch.no_grad():
        assert _fusable(trained, (lat, None))


def test_a_torch_without_the_kernel_scores_materialised(mla, monkeypatch):
    from shared_model.modules import mla as module

    monkeypatch.setattr(module, "_FLASH_CPU", None)
    x = torch.randn(3, 2, 32)
    prefix = mla.kv_latent(torch.randn(1, 6, 32))
    with torch.inference_mode():
        assert not _fusable(mla.q_latent(x)[..., None], (prefix, None))
    fused, reference = both(mla, x, [(prefix, None), own_tokens(mla, x)])
    assert torch.equal(fused, reference)


def test_the_module_switch_picks_the_form(mla):
    x = torch.randn(4, 2, 32)
    prefix = mla.kv_latent(torch.randn(1, 7, 32))
    segments = [(prefix, None), own_tokens(mla, x)]
    fused, reference = both(mla, x, segments)
    with torch.inference_mode():
        assert torch.equal(mla(x, segments, "absorbed"), fused)
        mla.fuse_first_segment = False
        assert torch.equal(mla(x, segments, "absorbed"), reference)


def test_which_segments_take_the_kernel(mla, monkeypatch):
    from shared_model.modules import mla as module

    calls = []

    def spy(q, segments):
        calls.append(len(segments))
        return merge(q, segments)

    merge = module._merge_fused_first
    monkeypatch.setattr(module, "_merge_fused_first", spy)
    x = torch.randn(3, 2, 32)
    prefix = mla.kv_latent(torch.randn(1, 6, 32))
    with torch.inference_mode():
        mla(x, [(prefix, None), own_tokens(mla, x)], "absorbed")  # the decode's shape
        assert calls == [2]
        alone = mla(x, [(prefix, None)], "absorbed")  # nothing to merge with: materialised
        masked_first = [(prefix, torch.ones(1, 1, 6, dtype=torch.bool)), own_tokens(mla, x)]
        mla(x, masked_first, "absorbed")
    assert calls == [2]
    expanded = [(prefix.expand(3, -1, -1), None)]
    torch.testing.assert_close(alone, mla(x, expanded, "naive"), atol=1e-5, rtol=1e-5)


def test_two_later_segments(mla):
    B, S = 3, 2
    x = torch.randn(B, S, 32)
    prefix = mla.kv_latent(torch.randn(1, 6, 32))
    shared = mla.kv_latent(torch.randn(1, 4, 32))
    segments = [(prefix, None), own_tokens(mla, x), (shared, torch.rand(B, S, 4) < 0.5)]
    fused, reference = both(mla, x, segments)
    torch.testing.assert_close(fused, reference, atol=1e-5, rtol=1e-5)
