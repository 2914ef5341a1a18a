"""The periodic time features against a per-feature reference (one sin or cos per feature)."""

from __future__ import annotations

import math

import torch

from shared_model.modules.time_encoding import (
    HARMONICS,
    MS_PER_DAY,
    MS_PER_HOUR,
    MS_PER_WEEK,
    NUM_PERIODIC_FEATURES,
    hour_of_day_features,
    periodic_features,
)


def _phase(ts: torch.Tensor, period: int) -> torch.Tensor:
    return torch.remainder(ts, period).to(torch.float32) * (2 * math.pi / period)


def _reference(ts: torch.Tensor, age: torch.Tensor) -> torch.Tensor:
    phases = (_phase(ts, MS_PER_DAY), _phase(ts, MS_PER_WEEK), _phase(age, MS_PER_DAY))
    feats = [f(k * p) for p in phases for k in HARMONICS for f in (torch.sin, torch.cos)]
    feats.append(torch.log1p(age.to(torch.float32) / MS_PER_HOUR) / 10.0)
    return torch.stack(feats, dim=-1)


def test_periodic_features_match_the_per_feature_reference() -> None:
    g = torch.Generator().manual_seed(0)
    ts = 1_700_000_000_000 + torch.randint(0, 10 * MS_PER_WEEK, (3, 37), generator=g)
    age = torch.randint(0, 3 * MS_PER_WEEK, (3, 37), generator=g)
    out = periodic_features(ts, age)
    assert out.shape == (3, 37, NUM_PERIODIC_FEATURES)
    torch.testing.assert_close(out, _reference(ts, age), rtol=0, atol=1e-6)


def test_hour_of_day_features_are_the_harmonics_of_the_day_phase() -> None:
    noon, six = 1_700_000_000_000 // MS_PER_DAY * MS_PER_DAY + torch.tensor(
        [12 * MS_PER_HOUR, 6 * MS_PER_HOUR]
    )
    out = hour_of_day_features(torch.stack([noon, six]))  # (2, 6)
    # noon: phase pi -> sin(k pi) = 0, cos(k pi) = -1, 1, -1; 6 am: phase pi/2.
    expected = torch.tensor([[0.0, -1.0, 0.0, 1.0, 0.0, -1.0], [1.0, 0.0, 0.0, -1.0, -1.0, 0.0]])
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
