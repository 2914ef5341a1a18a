"""Open-loop arrival schedules: when each request is due, independent of how fast answers come.

A closed-loop load generator (N users, each sending its next request when the last returned)
slows down exactly when the server does, so it hides the queueing that users of a serving
system see (coordinated omission). These schedules fix the send times in advance:

* ``constant``: one request every 1 / rate seconds;
* ``poisson``: exponential inter-arrival times with mean 1 / rate (independent arrivals);
* ``bursty``: Poisson whose rate alternates between ``burst_factor`` x rate for the first
  ``burst_share`` of every ``burst_period_s`` and a lower rate for the rest, so that the mean
  stays ``rate`` (a Markov-modulated Poisson process with a fixed phase).

All are seeded and deterministic. ``Dispatcher`` hands the due times out one by one to whichever
Locust user is free first, and counts arrivals that were sent late because every user was busy.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass

log = logging.getLogger(__name__)

KINDS = ("constant", "poisson", "bursty")


@dataclass(frozen=True)
class ArrivalSpec:
    rate: float  # mean requests per second
    kind: str = "poisson"  # constant | poisson | bursty
    seed: int = 0
    burst_factor: float = 3.0  # bursty: rate multiplier during a burst
    burst_share: float = 0.2  # bursty: fraction of each period spent bursting
    burst_period_s: float = 10.0  # bursty: length of one burst + quiet cycle

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise ValueError(f"rate must be > 0, got {self.rate}")
        if self.kind not in KINDS:
            raise ValueError(f"arrival kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "bursty" and not (0 < self.burst_share * self.burst_factor < 1):
            raise ValueError("bursty needs 0 < burst_share * burst_factor < 1 (mean rate kept)")

    @property
    def quiet_factor(self) -> float:
        """Rate multiplier outside bursts that keeps the mean at ``rate``."""
        return (1 - self.burst_share * self.burst_factor) / (1 - self.burst_share)


def arrival_offsets(spec: ArrivalSpec) -> Iterator[float]:
    """Endless due times in seconds from the start (non-decreasing, first one > 0 unless
    constant, which starts at 0)."""
    rng = random.Random(spec.seed)
    t = 0.0
    if spec.kind == "constant":
        for i in range(1 << 62):
            yield i / spec.rate
    elif spec.kind == "poisson":
        while True:
            t += rng.expovariate(spec.rate)
            yield t
    else:
        # Piecewise-constant rate: draw the next gap at the current segment's rate; if it
        # crosses the segment's end, restart from that end (memoryless, so this is exact).
        burst_len = spec.burst_share * spec.burst_period_s
        while True:
            phase = t % spec.burst_period_s
            in_burst = phase < burst_len
            factor = spec.burst_factor if in_burst else spec.quiet_factor
            segment_end = t - phase + (burst_len if in_burst else spec.burst_period_s)
            gap = rng.expovariate(spec.rate * factor)
            if t + gap >= segment_end:
                t = segment_end
                continue
            t += gap
            yield t


def arrivals_until(spec: ArrivalSpec, seconds: float) -> list[float]:
    """The due times that fall in [0, seconds)."""
    out = []
    for t in arrival_offsets(spec):
        if t >= seconds:
            return out
        out.append(t)
    return out  # unreachable: the generators are endless


class Dispatcher:
    """Hands out due times to free workers (Locust users) and tracks lateness.

    ``wait()`` returns how long the caller should sleep before sending its next request. When
    every worker was busy at a due time, the request goes out late; ``late`` counts those with a
    lag over ``late_threshold_s``, ``max_lag_s`` the worst. A high late share means the pool of
    users was too small for the rate and latency: the run was partly closed-loop.
    """

    def __init__(
        self, spec: ArrivalSpec, start: float | None = None, late_threshold_s: float = 0.010
    ) -> None:
        self.spec = spec
        self.start = time.monotonic() if start is None else start
        self._due = arrival_offsets(spec)
        self.late_threshold_s = late_threshold_s
        self.dispatched = 0
        self.late = 0
        self.max_lag_s = 0.0

    def wait(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        due = self.start + next(self._due)
        self.dispatched += 1
        lag = now - due
        if lag > self.late_threshold_s:
            self.late += 1
            self.max_lag_s = max(self.max_lag_s, lag)
        return max(0.0, due - now)

    def stats(self) -> dict[str, float]:
        return {
            "dispatched": self.dispatched,
            "late": self.late,
            "late_share": self.late / self.dispatched if self.dispatched else 0.0,
            "max_lag_ms": 1000 * self.max_lag_s,
        }
