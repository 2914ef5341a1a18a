import math

import pytest
import torch

from shared_model.losses import auc, multitask_bce, normalized_entropy, transfer_ratio


def test_ne_matches_hand_computation():
    y = torch.tensor([1.0, 0.0, 0.0, 1.0])
    q = torch.tensor([0.9, 0.2, 0.4, 0.6], dtype=torch.float64)
    log_loss = -(math.log(0.9) + math.log(0.8) + math.log(0.6) + math.log(0.6)) / 4
    p = 0.5
    base = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    assert normalized_entropy(q, y) == pytest.approx(log_loss / base, rel=1e-12)


def test_ne_is_one_for_the_base_rate_and_lower_for_signal():
    y = torch.tensor([1.0] * 3 + [0.0] * 7)
    assert normalized_entropy(torch.full((10,), 0.3), y) == pytest.approx(1.0, rel=1e-9)
    better = torch.tensor([0.8] * 3 + [0.1] * 7)
    assert normalized_entropy(better, y) < 1.0
    assert math.isnan(normalized_entropy(torch.full((4,), 0.5), torch.ones(4)))


def test_auc():
    assert auc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])) == 0.75
    assert auc(torch.tensor([0.5, 0.5]), torch.tensor([0, 1])) == 0.5  # ties count half
    assert math.isnan(auc(torch.tensor([0.2, 0.3]), torch.tensor([1, 1])))


def test_multitask_bce_weights_tasks():
    logits = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    per_task = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, y, reduction="none"
    ).mean(0)
    got = multitask_bce(logits, y, [2.0, 0.5])
    assert got.item() == pytest.approx((2.0 * per_task[0] + 0.5 * per_task[1]).item())


def test_transfer_ratio_is_relative_gain_ratio():
    # paper Table 3c: -0.14% upstream, -0.07% downstream -> tau = 50%
    tau = transfer_ratio(1.0, 0.9993, 1.0, 0.9986)
    assert tau == pytest.approx(0.5)


def _hand_ne(q: list[float], y: list[int]) -> float:
    """NE written out with math.log only: mean log loss over the entropy of the positive rate."""
    log_loss = -sum(
        math.log(qi) if yi else math.log(1 - qi) for qi, yi in zip(q, y, strict=True)
    ) / len(y)
    p = sum(y) / len(y)
    return log_loss / -(p * math.log(p) + (1 - p) * math.log(1 - p))


@pytest.mark.parametrize(
    ("q", "y"),
    [
        ([0.9, 0.2, 0.1, 0.3, 0.05], [1, 0, 0, 0, 0]),  # p = 0.2
        ([0.7, 0.8, 0.6, 0.3], [1, 1, 1, 0]),  # p = 0.75
        ([0.15, 0.4, 0.2, 0.35, 0.6, 0.1, 0.3, 0.25, 0.05, 0.5], [0] * 9 + [1]),  # p = 0.1
        ([0.55, 0.62, 0.48], [1, 0, 1]),  # p = 2/3, barely informative scores
    ],
)
def test_ne_matches_hand_computation_away_from_one_half(q, y):
    got = normalized_entropy(torch.tensor(q, dtype=torch.float64), torch.tensor(y))
    assert got == pytest.approx(_hand_ne(q, y), rel=1e-12)


def test_ne_hand_computed_values():
    # p = 0.25: base = -(0.25 ln 0.25 + 0.75 ln 0.75) = 0.5623351446188083
    q = [0.8, 0.1, 0.2, 0.3]
    y = [1, 0, 0, 0]
    log_loss = -(math.log(0.8) + math.log(0.9) + math.log(0.8) + math.log(0.7)) / 4
    assert log_loss == pytest.approx(0.22708064055624455, rel=1e-12)
    got = normalized_entropy(torch.tensor(q, dtype=torch.float64), torch.tensor(y))
    assert got == pytest.approx(0.22708064055624455 / 0.5623351446188083, rel=1e-12)
    # Predicting the base rate itself scores exactly 1 at any p, and NE is not symmetric in
    # the labels: flipping them while keeping the scores changes it.
    assert normalized_entropy(torch.full((4,), 0.25), torch.tensor(y)) == pytest.approx(1.0)
    flipped = normalized_entropy(torch.tensor(q, dtype=torch.float64), 1 - torch.tensor(y))
    assert flipped > 1.0
