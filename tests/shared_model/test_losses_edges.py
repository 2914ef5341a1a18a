"""Edges of the metrics that the hand-computed tests leave open: clamping, one-class labels,
dtypes, and tau's relative changes away from a base of 1."""

import math

import pytest
import torch

from shared_model.losses import EPS, multitask_bce, normalized_entropy, transfer_ratio


def test_ne_clamps_certain_wrong_predictions_to_a_finite_loss():
    # A confident 0 for a positive and a confident 1 for a negative cost log(EPS) each, not inf.
    y = torch.tensor([1, 0, 1, 0])
    q = torch.tensor([0.0, 1.0, 0.5, 0.5], dtype=torch.float64)
    log_loss = -(2 * math.log(EPS) + 2 * math.log(0.5)) / 4
    got = normalized_entropy(q, y)
    assert math.isfinite(got)
    assert got == pytest.approx(log_loss / math.log(2), rel=1e-9)


def test_ne_of_certain_right_predictions_is_near_zero():
    y = torch.tensor([1, 0, 0, 1])
    got = normalized_entropy(torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=torch.float64), y)
    assert 0.0 < got < 1e-6


def test_ne_is_nan_for_all_negative_labels():
    assert math.isnan(normalized_entropy(torch.full((5,), 0.2), torch.zeros(5)))


def test_multitask_bce_keeps_float64_and_takes_integer_labels():
    logits = torch.tensor([[0.3, -1.2], [2.0, 0.7]], dtype=torch.float64)
    labels = torch.tensor([[1, 0], [0, 1]])  # integer labels, as the samplers produce
    weights = [1 / 3, 2 / 3]  # not representable in float32
    per_task = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, labels.double(), reduction="none"
    ).mean(0)
    got = multitask_bce(logits, labels, weights)
    assert got.dtype == torch.float64
    expected = per_task[0].item() / 3 + 2 * per_task[1].item() / 3
    assert got.item() == pytest.approx(expected, rel=1e-14)


def test_transfer_ratio_uses_relative_changes():
    # downstream 2.0 -> 1.9 (-5%), upstream 4.0 -> 3.6 (-10%): tau = 0.5
    assert transfer_ratio(2.0, 1.9, 4.0, 3.6) == pytest.approx(0.5, rel=1e-12)


def test_transfer_ratio_is_nan_without_upstream_change():
    assert math.isnan(transfer_ratio(1.0, 0.99, 0.8, 0.8))
