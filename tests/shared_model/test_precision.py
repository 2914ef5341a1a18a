"""fp32 vs bf16 parity: the GPU serving paths run under bf16 autocast."""

import pytest
import torch

from shared_model import RankerModel, UpstreamModel, encode_user, score, tiny_config
from shared_model.inference import cast_weights_for_autocast, score_many
from tests.shared_model.helpers import (
    random_candidates,
    random_context,
    random_events,
    random_upstream,
)


def _models():
    torch.manual_seed(0)
    return (
        RankerModel(tiny_config("online", init_std=0.1)).eval(),
        UpstreamModel(tiny_config("upstream", init_std=0.1)).eval(),
    )


def _inputs(ranker, upstream):
    torch.manual_seed(1)
    cfg, ucfg = ranker.cfg, upstream.cfg
    rank_args = (
        random_events(cfg, [16]),
        random_context(1),
        random_candidates(cfg, 9),
        random_upstream(cfg, 1),
    )
    return rank_args, (random_events(ucfg, [16, 4]), random_context(2))


def test_bf16_autocast_on_cpu_stays_close_to_fp32():
    ranker, upstream = _models()
    rank_args, enc_args = _inputs(ranker, upstream)
    p32 = score(ranker, *rank_args)
    p16 = score(ranker, *rank_args, autocast_dtype=torch.bfloat16)
    assert p16.dtype == torch.float32
    assert (p32 - p16).abs().max() < 2e-2
    e32 = encode_user(upstream, *enc_args)
    e16 = encode_user(upstream, *enc_args, autocast_dtype=torch.bfloat16)
    rel = (e32 - e16).norm() / e32.norm()
    assert rel < 5e-2
    assert not torch.equal(e32, e16)  # autocast really ran in reduced precision


def test_bf16_score_then_fp32_score():
    """The absorbed path's folded weights must not carry one call's precision into the next."""
    ranker, upstream = _models()
    rank_args, _ = _inputs(ranker, upstream)
    p16 = score(ranker, *rank_args, autocast_dtype=torch.bfloat16)  # first: fills the cache
    p32 = score(ranker, *rank_args)
    fresh, _ = _models()  # the same weights, never run under autocast
    torch.testing.assert_close(p32, score(fresh, *rank_args), atol=0, rtol=0)
    assert p16.dtype == p32.dtype == torch.float32
    assert (p32 - p16).abs().max() < 2e-2
    assert torch.equal(score(ranker, *rank_args, autocast_dtype=torch.bfloat16), p16)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_matches_cpu_fp32():
    ranker, upstream = _models()
    rank_args, enc_args = _inputs(ranker, upstream)
    p_cpu = score(ranker, *rank_args)
    e_cpu = encode_user(upstream, *enc_args)
    ranker.cuda()
    upstream.cuda()
    p_gpu = score(ranker, *rank_args, autocast_dtype=torch.bfloat16).cpu()
    e_gpu = encode_user(upstream, *enc_args, autocast_dtype=torch.bfloat16).cpu()
    assert (p_cpu - p_gpu).abs().max() < 2e-2
    assert (e_cpu - e_gpu).norm() / e_cpu.norm() < 5e-2


def test_weights_cast_once_match_autocast_on_float32_weights():
    """The optimisation (Linear weights cast to bf16 at load) against its reference (autocast
    casting float32 weights on every call): same function up to bf16 rounding of the folds."""
    ranker, upstream = _models()
    rank_args, enc_args = _inputs(ranker, upstream)
    p_ref = score(ranker, *rank_args, autocast_dtype=torch.bfloat16)
    e_ref = encode_user(upstream, *enc_args, autocast_dtype=torch.bfloat16)
    cast_r, cast_u = _models()
    assert cast_weights_for_autocast(cast_r, torch.bfloat16) is cast_r
    cast_weights_for_autocast(cast_u, torch.bfloat16)
    linears = [m for m in cast_r.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(m.weight.dtype == torch.bfloat16 for m in linears)
    assert all(m.bias.dtype == torch.bfloat16 for m in linears if m.bias is not None)
    embeddings = [m for m in cast_r.modules() if isinstance(m, torch.nn.Embedding)]
    assert embeddings and all(m.weight.dtype == torch.float32 for m in embeddings)
    p = score(cast_r, *rank_args, autocast_dtype=torch.bfloat16)
    e = encode_user(cast_u, *enc_args, autocast_dtype=torch.bfloat16)
    assert p.dtype == e.dtype == torch.float32
    assert (p - p_ref).abs().max() < 1e-2
    assert (e - e_ref).norm() / e_ref.norm() < 2e-2
    # the micro-batched path reads the same cast weights
    many = score_many(cast_r, [rank_args, rank_args], autocast_dtype=torch.bfloat16)
    assert all((m - p_ref).abs().max() < 1e-2 for m in many)


def test_float32_or_none_leaves_the_weights_alone():
    ranker, _ = _models()
    before = {k: v.clone() for k, v in ranker.state_dict().items()}
    for dtype in (None, torch.float32):
        assert cast_weights_for_autocast(ranker, dtype) is ranker
    after = ranker.state_dict()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())
