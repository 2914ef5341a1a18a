"""int8 scoring (shared_model.quantize) against the float32 model, the reference.

The bounds are an order of magnitude above what this seeded model measures (0.004 against
float32, 0.007 for a request scored alone or in a batch, 6e-8 between the recorded graph and
the eager int8 model), so a Linear quantized wrongly (a lost bias, a transposed weight, a
folded weight quantized) fails them, while the quantization error itself passes.
"""

import subprocess
import sys
import warnings

import pytest
import torch
from torch import nn

from shared_model import RankerModel, score, tiny_config
from shared_model.inference import cast_weights_for_autocast, score_many
from shared_model.quantize import int8_linear_names, quantize_int8
from shared_model.traced import TracedScorer
from tests.shared_model.helpers import (
    random_candidates,
    random_context,
    random_events,
    random_upstream,
)

DYNAMIC_LINEAR = torch.ao.nn.quantized.dynamic.Linear


@pytest.fixture(scope="module")
def ranker():
    torch.manual_seed(0)
    model = RankerModel(tiny_config("online"))
    with torch.no_grad():  # weights far from init, so that the scores spread
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model.eval()


@pytest.fixture(scope="module")
def int8(ranker):
    return quantize_int8(ranker)


def _request(cfg, n_cands, length):
    return (
        random_events(cfg, [length]),
        random_context(1),
        random_candidates(cfg, n_cands),
        random_upstream(cfg, 1),
    )


@pytest.fixture(scope="module")
def requests(ranker):
    torch.manual_seed(1)
    cfg = ranker.cfg
    return [_request(cfg, 20, 12), _request(cfg, 7, 5), _request(cfg, 13, 16), _request(cfg, 3, 9)]


def test_the_sequence_linears_called_through_their_forward_are_quantized_and_no_others(
    ranker, int8
):
    names = set(int8_linear_names(ranker))
    modules = dict(int8.named_modules())
    for name, module in ranker.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        owner_name, _, child = name.rpartition(".")
        owner = ranker.get_submodule(owner_name)
        direct = child in getattr(owner, "direct_weights", ())
        expected = name.startswith("sequence.") and not direct and module.out_features > 1
        assert (name in names) == expected, name
        assert isinstance(modules[name], DYNAMIC_LINEAR) == expected, name
    # the FFNs carry most of the step's FLOPs; the folded attention weights stay float32
    assert {"sequence.layers.0.ffn.w1", "sequence.layers.2.ffn.w2"} <= names
    assert not names & {"sequence.layers.0.attn.wkv_b", "dhen.layers.0.ensemble.1.net.0"}
    everywhere = set(int8_linear_names(ranker, within=""))
    assert names < everywhere and "dhen.layers.0.ensemble.1.net.0" in everywhere
    assert "dhen.input" not in everywhere and "heads.heads.0.2" not in everywhere


def test_direct_weights_name_children_that_stay_float32():
    class Owner(nn.Module):
        direct_weights = ("folded",)

        def __init__(self):
            super().__init__()
            self.folded, self.called = nn.Linear(4, 4), nn.Linear(4, 4)
            self.pair, self.logit = nn.Linear(4, 2), nn.Linear(4, 1)

    model = nn.Sequential(Owner(), nn.Linear(4, 4))
    assert int8_linear_names(model, within="") == ["1", "0.called", "0.pair"]
    assert int8_linear_names(model, within="0") == ["0.called", "0.pair"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's deprecation notices stay inside quantize_int8
        quantized = quantize_int8(model, within="")
    assert type(quantized[0].folded) is nn.Linear and type(quantized[0].logit) is nn.Linear
    assert all(isinstance(m, DYNAMIC_LINEAR) for m in (quantized[0].called, quantized[1]))
    assert type(model[0].called) is nn.Linear and type(model[1]) is nn.Linear  # a copy


def test_int8_scores_close_to_float32(ranker, int8, requests):
    for request in requests:
        reference, got = score(ranker, *request), score(int8, *request)
        assert got.dtype == torch.float32 and got.shape == reference.shape
        assert 0 < (got - reference).abs().max() < 0.03  # quantized, and only that


def test_int8_recorded_graph_equals_the_eager_int8_model(int8, requests):
    scorer = TracedScorer(int8)
    for got, expected in zip(scorer.score_many(requests), score_many(int8, requests), strict=True):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        scorer.score(*requests[0]), score(int8, *requests[0]), atol=1e-5, rtol=0
    )


def test_a_batch_moves_int8_scores_by_the_quantization_error_only(int8, requests):
    """The activations' 8-bit scale is per call: a request batched with others is quantized on
    their joint range."""
    alone = [score(int8, *r) for r in requests]
    for got, expected in zip(score_many(int8, requests), alone, strict=True):
        assert (got - expected).abs().max() < 0.05


def test_a_fresh_process_quantizes_without_a_warning():
    """torch warns of its deprecated quantization APIs once per process: in a new one, with
    warnings as errors, quantize_int8 keeps them to itself."""
    code = (
        "import torch\n"
        "from shared_model.quantize import quantize_int8\n"
        "quantize_int8(torch.nn.Sequential(torch.nn.Linear(4, 4)), within='')\n"
    )
    run = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr[-2000:]


@pytest.mark.parametrize("bad", ["bf16", "cuda"])
def test_quantize_refuses_what_it_cannot_serve(ranker, bad, monkeypatch):
    if bad == "bf16":
        model = cast_weights_for_autocast(RankerModel(ranker.cfg).eval(), torch.bfloat16)
        with pytest.raises(
            ValueError, match=r"^quantize a float32 model \(not one cast to bf16\)$"
        ):
            quantize_int8(model)
    else:
        monkeypatch.setattr(torch.Tensor, "device", property(lambda t: torch.device("cuda")))
        with pytest.raises(ValueError, match=r"^int8 dynamic quantization runs on the CPU only$"):
            quantize_int8(ranker)
