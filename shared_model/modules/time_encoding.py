"""Time features: relative-age buckets and additive periodic timestamp encodings.

The paper (A.4) finds attention spikes at 24-hour intervals before the request, so the encoding
carries hour-of-day and day-of-week phases of the event and the 24-hour phase of its age.
"""

from __future__ import annotations

import math

import torch
from torch import nn

MS_PER_MINUTE = 60_000
MS_PER_HOUR = 3_600_000
MS_PER_DAY = 86_400_000
MS_PER_WEEK = 7 * MS_PER_DAY
HARMONICS = (1, 2, 3)
NUM_PERIODIC_FEATURES = 2 * len(HARMONICS) * 3 + 1  # (sin, cos) x harmonics x 3 phases + log-age


def age_ms(timestamps_ms: torch.Tensor, request_time_ms: torch.Tensor) -> torch.Tensor:
    """(B, T), (B,) -> (B, T) non-negative age in ms (events from the future read as age 0)."""
    return (request_time_ms[:, None] - timestamps_ms).clamp_min(0)


def age_bucket(age: torch.Tensor, num_buckets: int) -> torch.Tensor:
    """log2-minute buckets: 0 = under a minute, then 1-2 min, 2-4 min, ... (int64, same shape)."""
    minutes = (age // MS_PER_MINUTE).to(torch.float32)
    return torch.log2(minutes + 1.0).floor().long().clamp(0, num_buckets - 1)


def _phase(ts_ms: torch.Tensor, period_ms: int) -> torch.Tensor:
    # Remainder in int64 first: float32 cannot hold epoch milliseconds exactly.
    return torch.remainder(ts_ms, period_ms).to(torch.float32) * (2 * math.pi / period_ms)


def _harmonic_features(phases: torch.Tensor) -> torch.Tensor:
    """(..., P) phases -> (..., P * 2 * len(HARMONICS)): for each phase, for each harmonic k,
    sin(k * phase) then cos(k * phase). One sin and one cos over all of them (the same float32
    products as one op per feature, so the same values)."""
    k = torch.tensor(HARMONICS, dtype=phases.dtype, device=phases.device)
    angles = phases[..., None] * k  # (..., P, K)
    return torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1).flatten(-3)


def hour_of_day_features(ts_ms: torch.Tensor) -> torch.Tensor:
    """(...,) int64 -> (..., 2 * len(HARMONICS)) sin/cos of the hour-of-day phase."""
    return _harmonic_features(_phase(ts_ms, MS_PER_DAY)[..., None])


def periodic_features(timestamps_ms: torch.Tensor, age: torch.Tensor) -> torch.Tensor:
    """(B, T) event times and ages -> (B, T, NUM_PERIODIC_FEATURES): the harmonics of the
    hour-of-day and day-of-week phases of the event and of the 24-hour phase of its age, then
    its log-age."""
    phases = torch.stack(
        [
            _phase(timestamps_ms, MS_PER_DAY),
            _phase(timestamps_ms, MS_PER_WEEK),
            _phase(age, MS_PER_DAY),
        ],
        dim=-1,
    )  # (B, T, 3)
    log_age_hours = torch.log1p(age.to(torch.float32) / MS_PER_HOUR) / 10.0
    return torch.cat([_harmonic_features(phases), log_age_hours[..., None]], dim=-1)


class TimestampEncoding(nn.Module):
    """Learned projection of the periodic features, added to the first ``dims`` hidden dims."""

    def __init__(self, d_model: int, dims: int) -> None:
        super().__init__()
        self.d_model, self.dims = d_model, dims
        self.proj = nn.Linear(NUM_PERIODIC_FEATURES, dims)

    def forward(self, x: torch.Tensor, timestamps_ms: torch.Tensor, age: torch.Tensor):
        # x (B, T, D); only the first `dims` dims receive the encoding
        if self.dims == 0:
            return x
        enc = self.proj(periodic_features(timestamps_ms, age))  # (B, T, dims)
        return torch.cat([x[..., : self.dims] + enc, x[..., self.dims :]], dim=-1)
