"""The recorded-graph scorer against the eager model, the reference.

One scorer serves every case below, so a graph replayed for a case it was not recorded for
(a shape fact missing from ``signature``) shows as a wrong answer, not just a slow one.
"""

import copy
import itertools
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from shared_model import RankerModel, score, tiny_config, traced
from shared_model.inference import cast_weights_for_autocast, score_many
from shared_model.ranker import batch_requests
from shared_model.traced import TracedScorer, signature
from tests.clocks import StepClock
from tests.shared_model.helpers import (
    random_candidates,
    random_context,
    random_events,
    random_upstream,
    record_attention_calls,
)

ATOL = 1e-5


@pytest.fixture(scope="module")
def ranker():
    torch.manual_seed(0)
    model = RankerModel(tiny_config("online"))  # max_seq_len 16, pyramid [16, 6, 0]
    with torch.no_grad():  # random weights far from init, so a wrong mask or row would show
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model.eval()


def _request(cfg, length, n_cands, hole=False, present=True):
    if hole:  # valid rows not contiguous at the end: the history keeps its padding (and width)
        events = random_events(cfg, [length], T=length)
        events.valid[0, 1] = False
    else:
        events = random_events(cfg, [length])
    return (
        events,
        random_context(1),
        random_candidates(cfg, n_cands),
        random_upstream(cfg, 1, present),
    )


def _batch(cfg, users, one_candidate, length, padded, variant):
    """Requests whose batch has the given shape facts; ``variant`` changes G, N and T within
    them (the second batch of a case is not the shape its graph was recorded with)."""
    n = 1 if one_candidate else 3 + 4 * variant
    if users == 1:
        return [_request(cfg, length - variant, n, hole=padded)]
    G = 2 + variant
    lengths = [length - variant - (g if padded else 0) for g in range(G)]
    return [
        _request(cfg, L, n if one_candidate else n - g, present=g % 2 == 0)
        for g, L in enumerate(lengths)
    ]


# history lengths in each branch of the tiny pyramid: >= 16, 6..15, < 6
LENGTHS = (16, 12, 4)
CASES = list(itertools.product((1, 3), (True, False), LENGTHS, (False, True)))


def test_every_case_replays_its_own_graph_and_matches_the_eager_model(ranker):
    cfg = ranker.cfg
    torch.manual_seed(1)
    scorer = TracedScorer(ranker)
    batches = {case: [_batch(cfg, *case, v) for v in (0, 1)] for case in CASES}
    signatures = set()
    for v in (0, 1):  # every case recorded first, then every case replayed on other shapes
        for case, pair in batches.items():
            requests = pair[v]
            key = signature(ranker, batch_requests(requests), None)
            signatures.add(key)
            got = scorer.score_many(requests)
            want = score_many(ranker, requests)
            for g, w in zip(got, want, strict=True):
                assert g.shape == w.shape
                assert (g - w).abs().max() <= ATOL, (case, v)
        if v == 0:
            recorded = scorer.graphs
    assert len(signatures) == len(CASES) == recorded
    assert scorer.graphs == recorded  # the second round recorded nothing new


def test_one_request_equals_score(ranker):
    cfg = ranker.cfg
    torch.manual_seed(2)
    scorer = TracedScorer(ranker)
    for length, n in ((16, 7), (9, 1), (3, 5)):
        request = _request(cfg, length, n)
        assert (scorer.score(*request) - score(ranker, *request)).abs().max() <= ATOL


def test_no_candidates_and_no_history_score_eagerly(ranker):
    cfg = ranker.cfg
    torch.manual_seed(3)
    scorer = TracedScorer(ranker)
    no_cands, no_history = _request(cfg, 8, 0), _request(cfg, 0, 4)
    assert scorer.score(*no_cands).shape == (0, 2)
    assert (scorer.score(*no_history) - score(ranker, *no_history)).abs().max() <= ATOL
    assert scorer.graphs == 0
    # together they are a batch with a history and candidates: recorded, and still equal
    got = scorer.score_many([no_cands, no_history])
    assert got[0].shape == (0, 2)
    assert (got[1] - score(ranker, *no_history)).abs().max() <= ATOL


def test_two_threads_replaying_at_once_get_their_own_answers(ranker):
    cfg = ranker.cfg
    torch.manual_seed(4)
    requests = [_request(cfg, 9 + i % 7, 2 + i % 5) for i in range(16)]  # one case
    scorer = TracedScorer(ranker)
    with ThreadPoolExecutor(2) as pool:
        got = list(pool.map(lambda r: scorer.score(*r), requests))
    for r, g in zip(requests, got, strict=True):
        assert (g - score(ranker, *r)).abs().max() <= ATOL
    assert scorer.graphs == 1


@pytest.mark.parametrize(
    "step, words", [("trace", "no tracer here"), ("optimize_for_inference", "no passes here")]
)
def test_a_recording_that_fails_falls_back_and_still_answers(ranker, monkeypatch, step, words):
    """A torch whose tracer fails scores that case eagerly; one whose inference passes fail
    replays the graph as recorded. Either way with a warning, and the same answers."""

    def refuse(*args, **kwargs):
        raise RuntimeError(words)

    monkeypatch.setattr(torch.jit, step, refuse)
    torch.manual_seed(5)
    request = _request(ranker.cfg, 12, 4)
    scorer = TracedScorer(ranker)
    with pytest.warns(UserWarning, match=words):
        got = scorer.score(*request)
    assert (got - score(ranker, *request)).abs().max() <= ATOL
    again = _request(ranker.cfg, 11, 3)  # the same case: no second attempt, still right
    assert (scorer.score(*again) - score(ranker, *again)).abs().max() <= ATOL
    (graph,) = scorer._graphs.values()
    recorded = isinstance(graph, torch.jit.ScriptModule)
    assert recorded == (step != "trace")
    assert not recorded or list(graph.parameters())  # not frozen


def test_graphs_are_frozen_and_optimised_unless_asked_not_to(ranker):
    """Frozen, a graph holds its weights as constants (no parameters left); the passes keep
    the answers within float rounding of the graph as recorded and of the eager model."""
    torch.manual_seed(6)
    requests = [_request(ranker.cfg, 12, 5), _request(ranker.cfg, 16, 3)]
    optimised, recorded = TracedScorer(ranker), TracedScorer(ranker, optimize=False)
    fast, plain = optimised.score_many(requests), recorded.score_many(requests)
    (graph,) = optimised._graphs.values()
    (as_recorded,) = recorded._graphs.values()
    assert not list(graph.parameters()) and list(as_recorded.parameters())
    for f, p, w in zip(fast, plain, score_many(ranker, requests), strict=True):
        assert (f - w).abs().max() <= ATOL and (p - w).abs().max() <= ATOL


@pytest.mark.parametrize("form", ["optimised", "as recorded", "bf16"])
def test_a_new_graph_is_ready_to_replay_before_any_request_replays_it(ranker, form):
    """TorchScript's profiling executor profiles a graph's first run and builds its optimised
    plan on the next (tens of ms for the online model): recording runs a graph that often, so
    the first request to replay it does not pay for the plan."""
    model = (
        cast_weights_for_autocast(copy.deepcopy(ranker), torch.bfloat16)
        if form == "bf16"
        else ranker
    )
    dtype = torch.bfloat16 if form == "bf16" else None
    scorer = TracedScorer(model, optimize=form == "optimised")
    torch.manual_seed(10)
    batch = batch_requests([_request(ranker.cfg, 12, 4), _request(ranker.cfg, 9, 3)])
    flat = traced.flatten(batch)
    graph = scorer._graph(signature(model, batch, dtype), batch, flat, dtype)  # records it
    assert isinstance(graph, torch.jit.ScriptModule) and traced.executor_ready(graph)
    # the reference leaves it to the first replays: the first profiles, the second plans
    lazy = TracedScorer(model, optimize=form == "optimised", ready=False)
    graph = lazy._graph(signature(model, batch, dtype), batch, flat, dtype)
    ready = []
    for _ in range(3):
        ready.append(traced.executor_ready(graph))
        graph(*flat)
    assert ready == [False, False, True]


def test_a_bf16_graph_is_not_optimised(ranker):
    torch.manual_seed(8)
    scorer = TracedScorer(ranker)
    scorer.score(*_request(ranker.cfg, 12, 4), autocast_dtype=torch.bfloat16)
    (graph,) = scorer._graphs.values()
    assert list(graph.parameters())  # as recorded: the passes are for float32 graphs


def test_a_bf16_graph_replays_the_eager_bf16_step(ranker):
    """Recorded under bf16 autocast on weights cast once (as the ranker loads a bf16 model),
    a graph replays the eager bf16 step's arithmetic on other shapes, and not float32's."""
    bf16 = copy.deepcopy(ranker)
    cast_weights_for_autocast(bf16, torch.bfloat16)
    torch.manual_seed(9)
    scorer = TracedScorer(bf16)
    scorer.score(*_request(ranker.cfg, 12, 4), autocast_dtype=torch.bfloat16)
    requests = [_request(ranker.cfg, 7, 6), _request(ranker.cfg, 20, 2)]
    got = scorer.score_many(requests, torch.bfloat16)
    want = score_many(bf16, requests, autocast_dtype=torch.bfloat16)
    assert scorer.graphs == 2  # one user, then two: both replayed on shapes not recorded
    assert all(isinstance(g, torch.jit.ScriptModule) for g in scorer._graphs.values())
    got.append(scorer.score(*requests[0], torch.bfloat16))
    want.append(score(bf16, *requests[0], autocast_dtype=torch.bfloat16))
    for g, w in zip(got, want, strict=True):
        assert g.dtype == torch.float32 and (g - w).abs().max() <= ATOL
    float32 = score(ranker, *requests[0])
    assert (got[-1] - float32).abs().max() > 10 * ATOL  # it really ran in bf16


def test_record_time_adds_up_over_the_graphs_recorded(ranker, monkeypatch):
    cfg = ranker.cfg
    torch.manual_seed(7)
    monkeypatch.setattr(traced, "time", StepClock())
    scorer = TracedScorer(ranker)
    assert scorer.record_s == 0.0
    scorer.score(*_request(cfg, 16, 3))
    assert scorer.record_s == 1.0  # one recording: one second on this clock
    scorer.score(*_request(cfg, 16, 3))  # the same case: replayed, not recorded
    scorer.score(*_request(cfg, 4, 1))  # another case
    assert (scorer.graphs, scorer.record_s) == (2, 2.0)


@pytest.mark.parametrize("impl", ["sdpa", "naive"])
def test_the_recorded_step_is_the_attention_form_asked_for(ranker, impl, monkeypatch):
    """Every attention call the recorded step makes uses the scorer's ``impl``; with no padding
    in the history, the candidates' read of the prefix is recorded without its mask."""
    cfg = ranker.cfg
    torch.manual_seed(8)
    calls = record_attention_calls(monkeypatch)
    TracedScorer(ranker, impl=impl).score(*_request(cfg, 16, 3))  # recorded, then replayed
    L = cfg.n_layers
    assert [i for i, _ in calls] == [impl] * 2 * L  # the trace: L prefix, then L candidate
    assert [unmasked for _, unmasked in calls[L:]] == [True] * L
