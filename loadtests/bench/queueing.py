"""Latency of one model thread under Poisson arrivals, simulated (M/D/1, first come first served).

    python -m loadtests.bench.queueing --rates 5,10,20 --service-ms 16,23,28

The ranker's inference thread serves requests one after the other with a near-constant service
time D (the model step), so its latency tail under Poisson arrivals at rate lambda is that of
an M/D/1 queue: what the hardware and the model's FLOPs allow before any serving overhead.
docs/operations.md ("Sizing for a P99") compares it with the measured P99s. Deterministic for
a seed; no timing is measured.
"""

from __future__ import annotations

import argparse
import random


def simulate(rate: float, service_s: float, requests: int = 200_000, seed: int = 1) -> list[float]:
    """Response times (s) of ``requests`` Poisson arrivals at ``rate``/s, sorted."""
    if rate <= 0 or service_s <= 0:
        raise ValueError("rate and service time must be positive")
    rng = random.Random(seed)
    now = free_at = 0.0
    out = []
    for _ in range(requests):
        now += rng.expovariate(rate)
        free_at = max(now, free_at) + service_s
        out.append(free_at - now)
    out.sort()
    return out


def quantile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", default="5,10,20", help="arrivals per second")
    parser.add_argument("--service-ms", default="16,23,28", help="model step times")
    parser.add_argument("--requests", type=int, default=200_000)
    args = parser.parse_args(argv)
    rates = [float(x) for x in args.rates.split(",")]
    services = [float(x) for x in args.service_ms.split(",")]
    print(f"{'req/s':>6} {'D ms':>6} {'util':>5} {'p50 ms':>7} {'p99 ms':>7}")
    for rate in rates:
        for d in services:
            if rate * d / 1000 >= 1:
                print(f"{rate:>6g} {d:>6g} {rate * d / 1000:>5.2f}  overloaded")
                continue
            r = simulate(rate, d / 1000, args.requests)
            print(
                f"{rate:>6g} {d:>6g} {rate * d / 1000:>5.2f} {1000 * quantile(r, 0.5):>7.1f} "
                f"{1000 * quantile(r, 0.99):>7.1f}"
            )


if __name__ == "__main__":
    main()
