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
