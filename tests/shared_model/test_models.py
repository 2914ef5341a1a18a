from dataclasses import replace

import pytest
import torch

from shared_model import RankerModel, UpstreamModel, encode_user, score, tiny_config
from shared_model.features import UpstreamFeature
from tests.shared_model.helpers import (
    random_candidates,
    random_context,
    random_events,
    random_upstream,
)


def _randomize(model: torch.nn.Module, std: float = 0.3) -> torch.nn.Module:
    """Random weights far from init, so that a wrong mask or trim changes the output."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, std)
    return model.eval()


@pytest.fixture
def ranker():
    torch.manual_seed(0)
    return _randomize(RankerModel(tiny_config("online")))


@pytest.fixture
def upstream():
    torch.manual_seed(0)
    return _randomize(UpstreamModel(tiny_config("upstream")))


def test_shapes(ranker, upstream):
    cfg = ranker.cfg
    torch.manual_seed(2)
    ev = random_events(cfg, [16, 5, 0])
    ctx = random_context(3)
    logits = ranker(ev, ctx, random_candidates(cfg, 3), random_upstream(cfg, 3))
    assert logits.shape == (3, 2) and logits.isfinite().all()
    ucfg = upstream.cfg
    emb = encode_user(upstream, random_events(ucfg, [16, 1, 0]), random_context(3))
    assert emb.shape == (3, ucfg.d_summary) and emb.dtype == torch.float32
    assert emb.isfinite().all()


@pytest.mark.parametrize("impl", ["naive", "sdpa", "absorbed"])
def test_shared_sequence_scoring_equals_independent_forwards(ranker, impl):
    cfg = ranker.cfg
    torch.manual_seed(3)
    for length in (16, 9, 0):
        ev, ctx = random_events(cfg, [length]), random_context(1)
        cands = random_candidates(cfg, 7)
        up = random_upstream(cfg, 1)
        with torch.no_grad():
            reference = torch.cat(
                [  # N truly independent full forwards, one per candidate
                    ranker(ev, ctx, cands.index(slice(i, i + 1)), up, impl="naive")
                    for i in range(7)
                ]
            )
            shared = ranker.score_shared(ev, ctx, cands, up, impl=impl)
            naive = ranker.score_naive(ev, ctx, cands, up, impl=impl)
        assert (shared - reference).abs().max() <= 1e-5
        assert (naive - reference).abs().max() <= 1e-5


def test_score_entry_point_shared_equals_naive(ranker):
    cfg = ranker.cfg
    torch.manual_seed(4)
    args = (
        random_events(cfg, [12]),
        random_context(1),
        random_candidates(cfg, 20),
        random_upstream(cfg, 1),
    )
    shared = score(ranker, *args, shared=True)
    naive = score(ranker, *args, shared=False)
    assert shared.shape == (20, 2) and ((shared > 0) & (shared < 1)).all()
    assert (shared - naive).abs().max() <= 1e-5


def test_prefix_encoding_is_the_same_in_every_attention_form(ranker):
    """The ranker encodes its prefix in the absorbed form; the naive form is the reference:
    several users at once, padded and unpadded, an empty history, a hole in the middle."""
    cfg = ranker.cfg
    torch.manual_seed(9)
    ev, ctx = random_events(cfg, [16, 9, 0, 12]), random_context(4)
    ev.valid[3, 8] = False  # not left-padded: the mask, not the trim, must handle it
    with torch.no_grad():
        caches = {
            impl: ranker.sequence.encode_history(ev, ctx, impl)
            for impl in ("naive", "sdpa", "absorbed")
        }
    ref = caches["naive"]
    for impl in ("sdpa", "absorbed"):
        assert (caches[impl].context - ref.context).abs().max() <= 1e-5, impl
        for lat_ref, lat in zip(ref.latents, caches[impl].latents, strict=True):
            assert (lat - lat_ref).abs().max() <= 1e-5, impl
    got = caches["absorbed"]
    # and a wrong mask would show: dropping the hole changes user 3's prefix
    ev.valid[3, 8] = True
    with torch.no_grad():
        moved = ranker.sequence.encode_history(ev, ctx, "absorbed")
    assert not torch.allclose(moved.context[3], got.context[3], atol=1e-4)
    torch.testing.assert_close(moved.context[:3], got.context[:3])


def test_causality_earlier_event_states_ignore_later_events(ranker):
    """Changing event t never changes the layer outputs of events before t."""
    cfg = replace(ranker.cfg, pyramid=[16, 16, 16])  # keep every row to inspect it
    model = _randomize(RankerModel(cfg))
    torch.manual_seed(5)
    ev = random_events(cfg, [16])
    ctx = random_context(1)
    changed = replace(ev, item_hash=ev.item_hash.clone(), action_type=ev.action_type.clone())
    changed.item_hash[0, 10] += 1
    changed.action_type[0, 10] = 1 if int(ev.action_type[0, 10]) != 1 else 2
    with torch.no_grad():
        a = model.sequence.encode_history(ev, ctx)
        b = model.sequence.encode_history(changed, ctx)
    for lat_a, lat_b in zip(a.latents[1:], b.latents[1:], strict=True):  # inputs to layers 2, 3
        torch.testing.assert_close(lat_a[:, :10], lat_b[:, :10], atol=1e-6, rtol=0)
        assert not torch.allclose(lat_a[:, 10:], lat_b[:, 10:])


def test_pyramid_trims_to_the_most_recent_events(ranker):
    """Layer 2 of pyramid [16, 6, 0] keeps exactly the 6 most recent event rows (and the query
    rows) of what a full-attention model computes there; the final output differs."""
    cfg = ranker.cfg
    assert cfg.pyramid == [16, 6, 0]
    full_model = RankerModel(replace(cfg, pyramid=[16, 16, 16])).eval()
    full_model.load_state_dict(ranker.state_dict())  # same weights, no trimming
    torch.manual_seed(6)
    ev, ctx = random_events(cfg, [16]), random_context(1)
    cands, up = random_candidates(cfg, 3), random_upstream(cfg, 1)
    with torch.no_grad():
        trimmed = ranker.sequence.encode_history(ev, ctx)
        full = full_model.sequence.encode_history(ev, ctx)
        # prefix rows per layer: kept events + the one context query token
        assert [lat.shape[1] for lat in trimmed.latents] == [17, 17, 7]
        torch.testing.assert_close(trimmed.latents[2], full.latents[2][:, -7:])
        assert not torch.allclose(trimmed.latents[2], full.latents[2][:, :7])
        assert not torch.allclose(
            ranker.score_shared(ev, ctx, cands, up), full_model.score_shared(ev, ctx, cands, up)
        )


def test_left_padding_does_not_change_results(ranker):
    cfg = ranker.cfg
    torch.manual_seed(8)
    padded = random_events(cfg, [5], T=16)
    unpadded = padded.last(5)  # the same 5 events, no padding
    ctx, cands, up = random_context(1), random_candidates(cfg, 4), random_upstream(cfg, 1)
    with torch.no_grad():
        a = ranker.score_shared(padded, ctx, cands, up)
        b = ranker.score_shared(unpadded, ctx, cands, up)
        c = ranker(
            padded.repeat(4),
            ctx.repeat(4),
            cands,
            up.__class__(up.embedding.expand(4, -1), up.present.expand(4)),
        )
    assert (a - b).abs().max() <= 1e-5
    assert (a - c).abs().max() <= 1e-5


def test_absent_upstream_embedding_is_ignored(ranker):
    cfg = ranker.cfg
    torch.manual_seed(9)
    args = (random_events(cfg, [10]), random_context(1), random_candidates(cfg, 3))
    absent_a = UpstreamFeature(torch.randn(1, cfg.d_upstream), torch.tensor([False]))
    absent_b = UpstreamFeature.absent(1, cfg.d_upstream)
    present = UpstreamFeature(absent_a.embedding, torch.tensor([True]))
    with torch.no_grad():
        a = ranker.score_shared(*args, absent_a)
        b = ranker.score_shared(*args, absent_b)
        p = ranker.score_shared(*args, present)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, p)


def test_upstream_embedding_is_batch_independent(upstream):
    cfg = upstream.cfg
    torch.manual_seed(10)
    ev, ctx = random_events(cfg, [16, 7]), random_context(2)
    both = encode_user(upstream, ev, ctx)
    second = encode_user(upstream, ev.select(slice(1, 2)), ctx.select(slice(1, 2)))
    torch.testing.assert_close(both[1:], second, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(both[0], both[1])


def test_a_few_steps_learn_a_toy_task():
    """The ranker learns 'click iff the candidate's ad equals the last item in history'."""
    torch.manual_seed(11)
    cfg = tiny_config("online", n_layers=2, pyramid=[8, 0], max_seq_len=8)
    model = RankerModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    from shared_model.losses import multitask_bce

    def batch(B=64):
        ev = random_events(cfg, [8] * B)
        ev.item_hash[:] = torch.randint(0, 20, ev.item_hash.shape)
        cands = random_candidates(cfg, B)
        match = torch.rand(B) < 0.5
        cands.ad_hash = torch.where(match, ev.item_hash[:, -1], torch.randint(0, 20, (B,)))
        y = (cands.ad_hash == ev.item_hash[:, -1]).float()
        return ev, random_context(B), cands, random_upstream(cfg, B, False), torch.stack([y, y], 1)

    data = [batch() for _ in range(4)]
    losses = []
    for step in range(60):
        ev, ctx, cands, up, y = data[step % 4]
        loss = multitask_bce(model(ev, ctx, cands, up), y, cfg.task_weights)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-4:]) / 4 < 0.7 * sum(losses[:4]) / 4
