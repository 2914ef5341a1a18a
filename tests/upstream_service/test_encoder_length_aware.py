"""Length-aware encoding: users grouped by history length, each group cut to its longest
history, equal to the reference that pads every user to T."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch

from shared_model.checkpoint import build_model
from shared_model.config import tiny_config
from shared_model.contract import EmbeddingDType
from tests.upstream_service.conftest import BASE_MS, make_event
from upstream_service.encoder import UserEncoder, length_groups

LENGTHS = [0, 1, 3, 16, 7, 0, 2, 20, 9, 5, 16, 4]  # 0 = no history; 20 > T = 16


def _history(user: str, n: int, content_dim: int) -> list:
    actions = ["view", "click", "conversion", "impression"]
    return [
        make_event(
            user,
            actions[(i * 7 + len(user)) % 4],
            BASE_MS + 1000 * i,
            item_id=f"it-{user}-{i}",
            surface="feed" if i % 3 else "reels",
            content_embedding=tuple(0.1 * ((i + j) % 5) for j in range(content_dim)),
        ).to_history_record()
        for i in range(n)
    ]


@pytest.mark.parametrize("pyramid", [[16, 16, 0], [16, 6, 0]], ids=["full", "pyramidal"])
def test_length_aware_equals_padded_reference(pyramid: list[int]) -> None:
    torch.manual_seed(0)
    cfg = dataclasses.replace(tiny_config("upstream"), pyramid=pyramid)
    encoder = UserEncoder(build_model(cfg), cfg, "test-v1", dtype=EmbeddingDType.FLOAT32)
    users = [f"user-{i}" for i in range(len(LENGTHS))]
    histories = [_history(u, n, cfg.content_dim) for u, n in zip(users, LENGTHS, strict=True)]
    reference = encoder.embed(users, histories, length_aware=False)
    fast = encoder.embed(users, histories)
    assert fast.shape == (len(users), cfg.d_summary)
    torch.testing.assert_close(fast, reference, atol=1e-5, rtol=0)
    # A user's vector does not depend on who else is in the batch.
    alone = encoder.embed(users[3:4], histories[3:4])
    torch.testing.assert_close(alone[0], reference[3], atol=1e-5, rtol=0)
    records = encoder.encode(users, histories, now_ms=BASE_MS)
    torch.testing.assert_close(
        torch.tensor([r.record.vector for r in records]), reference, atol=1e-5, rtol=0
    )
    assert [r.user_id for r in records] == users


def test_length_groups_cover_every_row_once_longest_first() -> None:
    groups = length_groups(LENGTHS)
    assert sorted(i for g in groups for i in g) == list(range(len(LENGTHS)))
    longest_per_group = [max(LENGTHS[i] for i in g) for g in groups]
    assert longest_per_group == sorted(longest_per_group, reverse=True)
    # each group is a run of the users sorted by length (no shorter user skips a longer group)
    for longer, shorter in itertools.pairwise(groups):
        assert min(LENGTHS[i] for i in longer) >= max(LENGTHS[i] for i in shorter)
    assert length_groups([]) == []


def _cost(lengths: list[int], groups: list[list[int]], overhead: float) -> float:
    return sum(overhead + len(g) * max(1, max(lengths[i] for i in g)) ** 2 for g in groups)


@pytest.mark.parametrize("overhead", [0.0, 50.0, 1e9])
def test_length_groups_are_the_least_cost_partition(overhead: float) -> None:
    """Against brute force over every way to cut the sorted users into runs."""
    lengths = [0, 3, 16, 7, 2, 20, 9, 5]
    groups = length_groups(lengths, cost=lambda n: n * n, overhead=overhead)
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    best = min(
        _cost(
            lengths, [order[a:b] for a, b in itertools.pairwise([0, *cuts, len(order)])], overhead
        )
        for k in range(len(order))
        for cuts in itertools.combinations(range(1, len(order)), k)
    )
    assert _cost(lengths, groups, overhead) == best
    if overhead == 0:
        assert len(groups) == len(set(lengths))  # no fixed cost: one group per distinct length
    if overhead == 1e9:
        assert len(groups) == 1  # a forward costs more than any padding


def test_a_bf16_encoder_from_a_checkpoint_casts_its_weights_once(upstream_checkpoint) -> None:
    """UPSTREAM autocast bf16: Linear weights are cast at load; embeddings stay within bf16
    tolerance of the float32 encoder of the same checkpoint."""
    fp32 = UserEncoder.from_checkpoint(upstream_checkpoint, device="cpu", autocast="none")
    bf16 = UserEncoder.from_checkpoint(upstream_checkpoint, device="cpu", autocast="bf16")
    linear = [m.weight.dtype for m in bf16.model.modules() if isinstance(m, torch.nn.Linear)]
    assert linear and set(linear) == {torch.bfloat16}
    assert {m.weight.dtype for m in fp32.model.modules() if isinstance(m, torch.nn.Linear)} == {
        torch.float32
    }
    users = [f"user-{i}" for i in range(len(LENGTHS))]
    histories = [
        _history(u, n, fp32.config.content_dim) for u, n in zip(users, LENGTHS, strict=True)
    ]
    ref, got = fp32.embed(users, histories), bf16.embed(users, histories)
    assert got.dtype == torch.float32 and not torch.equal(got, ref)
    assert (got - ref).norm() / ref.norm() < 5e-2


def test_auto_autocast_follows_the_cpu(upstream_checkpoint) -> None:
    """UPSTREAM_AUTOCAST=auto: bf16 where the CPU multiplies bf16 natively, float32 elsewhere
    (the ranker's rule, shared_model.inference.resolve_autocast)."""
    from shared_model.inference import cpu_has_native_bf16

    auto = UserEncoder.from_checkpoint(upstream_checkpoint, device="cpu", autocast="auto")
    expected = torch.bfloat16 if cpu_has_native_bf16() else None
    assert auto.autocast_dtype is expected
    linear = {m.weight.dtype for m in auto.model.modules() if isinstance(m, torch.nn.Linear)}
    assert linear == {expected or torch.float32}
