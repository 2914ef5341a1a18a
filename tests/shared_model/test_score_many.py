"""Several requests scored together equal each request scored alone."""

import re

import pytest
import torch

from shared_model import RankerModel, score, tiny_config
from shared_model.features import EventBatch
from shared_model.inference import score_many
from shared_model.modules.grouping import per_row
from shared_model.modules.mla import MultiHeadLatentAttention
from shared_model.ranker import batch_requests
from tests.shared_model.helpers import (
    random_candidates,
    random_context,
    random_events,
    random_upstream,
    record_attention_calls,
)


@pytest.fixture
def ranker():
    torch.manual_seed(0)
    model = RankerModel(tiny_config("online"))
    with torch.no_grad():  # random weights far from init, so a wrong mask would show
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model.eval()


def _request(cfg, length, n_cands, width=None, present=True):
    return (
        random_events(cfg, [length], T=width),
        random_context(1),
        random_candidates(cfg, n_cands),
        random_upstream(cfg, 1, present),
    )


@pytest.mark.parametrize("impl", ["absorbed", "sdpa", "naive"])
def test_score_many_equals_score_on_each_request(ranker, impl):
    cfg = ranker.cfg
    torch.manual_seed(1)
    requests = [
        _request(cfg, 16, 7),
        _request(cfg, 0, 3),  # empty history
        _request(cfg, 5, 11, present=False),  # no upstream embedding
        _request(cfg, 9, 1, width=12),  # another padded width
        _request(cfg, 16, 0),  # no candidates
    ]
    batched = score_many(ranker, requests, impl=impl)
    assert [p.shape for p in batched] == [(7, 2), (3, 2), (11, 2), (1, 2), (0, 2)]
    for request, probs in zip(requests, batched, strict=True):
        alone = score(ranker, *request, impl=impl)
        assert (probs - alone).abs().max() <= 1e-5 if len(alone) else probs.numel() == 0


def test_score_many_of_one_request_and_of_equal_requests(ranker):
    cfg = ranker.cfg
    torch.manual_seed(2)
    request = _request(cfg, 12, 6)
    (one,) = score_many(ranker, [request])
    assert (one - score(ranker, *request)).abs().max() <= 1e-5
    twice = score_many(ranker, [request, request])
    torch.testing.assert_close(twice[0], twice[1], atol=1e-6, rtol=0)
    assert score_many(ranker, []) == []


def test_score_many_keeps_users_apart(ranker):
    """A candidate reads only its own user's history: changing user 1 leaves user 0 alone."""
    cfg = ranker.cfg
    torch.manual_seed(3)
    a, b = _request(cfg, 16, 4), _request(cfg, 16, 4)
    b_changed = (random_events(cfg, [16]), *b[1:])
    first = score_many(ranker, [a, b])
    second = score_many(ranker, [a, b_changed])
    torch.testing.assert_close(first[0], second[0], atol=1e-6, rtol=0)
    assert not torch.allclose(first[1], second[1])


def test_score_many_rejects_a_multi_user_request(ranker):
    cfg = ranker.cfg
    two_users = (
        random_events(cfg, [4, 4]),
        random_context(2),
        random_candidates(cfg, 2),
        random_upstream(cfg, 2),
    )
    with pytest.raises(ValueError, match="one user"):
        score_many(ranker, [two_users])


def test_grouped_segment_equals_per_row_copies():
    """G key sets read by G * M query rows == each row given its user's keys copied."""
    torch.manual_seed(4)
    mla = MultiHeadLatentAttention(tiny_config(n_heads=3, head_dim=5, kv_lora_rank=7)).eval()
    G, M, L, S = 3, 4, 6, 2
    lat = mla.kv_latent(torch.randn(G, L, 32))
    allowed = torch.rand(G, 1, L) > 0.3
    allowed[:, :, -1] = True  # every row keeps one key
    x = torch.randn(G * M, S, 32)
    own = mla.kv_latent(x)
    causal = torch.ones(S, S, dtype=torch.bool).tril()[None]
    with torch.inference_mode():
        ref = mla(x, [(per_row(lat, G * M), per_row(allowed, G * M)), (own, causal)], "naive")
        for impl in ("absorbed", "sdpa", "naive"):
            out = mla(x, [(lat, allowed), (own, causal)], impl)
            torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_event_batch_cat_left_pads_and_trims():
    cfg = tiny_config("online")
    torch.manual_seed(5)
    a, b = random_events(cfg, [3], T=4), random_events(cfg, [6], T=6)
    both = EventBatch.cat([a, b], 5)
    assert both.shape == (2, 5)
    assert both.valid.tolist() == [[False, False, True, True, True], [True] * 5]
    torch.testing.assert_close(both.content[0, 1:], a.content[0])
    torch.testing.assert_close(both.item_hash[1], b.item_hash[0, 1:])
    assert (both.content[0, 0] == 0).all()


def test_per_row_groups_and_rejects_uneven_groups():
    t = torch.arange(3)[:, None]  # (3, 1): three users
    assert per_row(t, 6)[:, 0].tolist() == [0, 0, 1, 1, 2, 2]
    assert per_row(t[:1], 4).shape == (4, 1) and per_row(t, 3) is t
    with pytest.raises(ValueError, match="equal groups"):
        per_row(t, 7)


def _holed(cfg, length: int, n_cands: int):
    """A request whose history has a hole: its valid rows are not contiguous at the end."""
    events, *rest = _request(cfg, length, n_cands, width=length)
    events.valid[0, 1] = False
    return (events, *rest)


def test_a_history_with_holes_is_kept_whole_and_masked(ranker):
    """Only left padding may be trimmed; a hole stays and is masked, alone or batched."""
    cfg = ranker.cfg
    torch.manual_seed(6)
    holed, full = _holed(cfg, 6, 3), _request(cfg, 6, 3, width=6)
    assert batch_requests([holed]).events.shape == (1, 6)
    assert batch_requests([holed]).padded and batch_requests([holed, full]).padded
    for batch in ([holed], [holed, full]):
        probs = score_many(ranker, batch)[0]
        naive = score(ranker, *holed, shared=False)  # N full forwards, nothing trimmed
        assert (probs - naive).abs().max() <= 1e-5


def test_only_left_padding_is_trimmed(ranker):
    cfg = ranker.cfg
    torch.manual_seed(7)
    left_padded, full = _request(cfg, 3, 2, width=5), _request(cfg, 5, 2, width=5)
    alone = batch_requests([left_padded])
    assert alone.events.shape == (1, 3) and not alone.padded
    assert alone.events.valid.all()
    assert not batch_requests([full, full]).padded  # equal full histories: no mask
    together = batch_requests([left_padded, full])
    assert together.events.shape == (2, 5) and together.padded  # the shorter one re-padded


def test_requests_with_one_candidate_or_none_at_all(ranker):
    cfg = ranker.cfg
    torch.manual_seed(8)
    ones = [_request(cfg, 6, 1), _request(cfg, 4, 1)]
    for request, probs in zip(ones, score_many(ranker, ones), strict=True):
        assert probs.shape == (1, 2)
        assert (probs - score(ranker, *request)).abs().max() <= 1e-5
    nones = score_many(ranker, [_request(cfg, 6, 0), _request(cfg, 4, 0)])
    assert [(p.shape, p.dtype) for p in nones] == [((0, 2), torch.float32)] * 2


def test_a_request_must_hold_one_user_throughout(ranker):
    cfg = ranker.cfg
    one, two = random_events(cfg, [4]), random_events(cfg, [4, 4])
    cands, up = random_candidates(cfg, 2), random_upstream(cfg, 1)
    history = re.escape("score_many takes one user's history per request (batch 1)")
    for events, ctx in ((two, random_context(1)), (one, random_context(2))):
        with pytest.raises(ValueError, match=f"^{history}$"):
            batch_requests([(events, ctx, cands, up)])
    embedding = re.escape("score_many takes one upstream embedding per request")
    with pytest.raises(ValueError, match=f"^{embedding}$"):
        batch_requests([(one, random_context(1), cands, random_upstream(cfg, 2))])


@pytest.mark.parametrize("impl", ["sdpa", "naive"])
def test_score_many_runs_the_attention_it_is_asked_for(ranker, impl, monkeypatch):
    """Every attention call of the batched step (prefix and candidates) uses ``impl``, and
    the candidates skip the prefix mask when no history holds padding."""
    cfg = ranker.cfg
    torch.manual_seed(9)
    calls = record_attention_calls(monkeypatch)
    full = [_request(cfg, 6, 3, width=6), _request(cfg, 6, 2, width=6)]
    ranker.score_many(full, impl=impl)
    L = cfg.n_layers
    assert [i for i, _ in calls] == [impl] * 2 * L  # L prefix layers, then L candidate layers
    assert [unmasked for _, unmasked in calls[L:]] == [True] * L
    calls.clear()
    ranker.score_many([_request(cfg, 6, 3), _request(cfg, 4, 2)], impl=impl)
    assert [unmasked for _, unmasked in calls[L:]] == [False] * L  # one history is padded


def test_the_batched_step_defaults_to_the_absorbed_form(ranker):
    cfg = ranker.cfg
    torch.manual_seed(10)
    requests = [_request(cfg, 6, 3), _request(cfg, 4, 2)]
    by_default = ranker.score_many(requests)
    for got, want in zip(by_default, ranker.score_many(requests, impl="absorbed"), strict=True):
        torch.testing.assert_close(got, want, atol=0, rtol=0)
    batch = batch_requests(requests)
    logits = ranker.score_batched(*batch.inputs, batch.padded)
    want = ranker.score_batched(*batch.inputs, batch.padded, "absorbed")
    torch.testing.assert_close(logits, want, atol=0, rtol=0)
