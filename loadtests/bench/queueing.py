"""Latency of the ranker's inference threads under Poisson arrivals, simulated (first come,
first served; no batching).

    python -m loadtests.bench.queueing --rates 5,10,20 --service-ms 16,23,28 --servers 2

Each inference thread serves requests one after the other, so its latency tail under
Poisson arrivals at rate lambda is that of a queue with as many servers as threads: M/D/c
with a constant service time D (the model step), or M/G/c with service times drawn, with
replacement, from measured ones (the ranker benchmark draws from its own lone requests' times,
an ideal queue of its host: no contention between the threads, no serving work beyond what a
lone request measured). docs/operations.md ("Sizing for a P99") compares it with the measured
P99s. Deterministic for a seed; no timing is measured.
"""

from __future__ import annotations

import argparse
import heapq
import random
from collections.abc import Sequence


def simulate(
    rate: float,
    service_s: float | Sequence[float],
    requests: int = 200_000,
    seed: int = 1,
    servers: int = 1,
) -> list[float]:
    """Response times (s) of ``requests`` Poisson arrivals at ``rate``/s, sorted.

    ``service_s``: one constant service time, or measured ones to draw each request's from.
    ``servers``: how many requests are served at once; an arrival takes the server that frees
    first. The arrivals depend on ``seed`` alone, so the same seed compares service
    distributions and server counts on the same arrivals.
    """
    samples = [float(service_s)] if isinstance(service_s, int | float) else list(service_s)
    if rate <= 0 or not samples or min(samples) <= 0:
        raise ValueError("rate and service times must be positive")
    if servers < 1:
        raise ValueError(f"servers must be at least 1, not {servers}")
    arrivals, draws = random.Random(seed), random.Random(seed + 1)
    free_at = [0.0] * servers  # a heap: when each server is next free
    now = 0.0
    out = []
    for _ in range(requests):
        now += arrivals.expovariate(rate)
        service = samples[0] if len(samples) == 1 else draws.choice(samples)
        done = max(now, free_at[0]) + service
        heapq.heapreplace(free_at, done)
        out.append(done - now)
    out.sort()
    return out


def quantile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--rates", default="5,10,20", help="arrivals per second")
    parser.add_argument("--service-ms", default="16,23,28", help="model step times")
    parser.add_argument("--servers", type=int, default=1, help="inference threads")
    parser.add_argument("--requests", type=int, default=200_000)
    args = parser.parse_args(argv)
    rates = [float(x) for x in args.rates.split(",")]
    services = [float(x) for x in args.service_ms.split(",")]
    c = args.servers
    print(f"{'req/s':>6} {'D ms':>6} {'util':>5} {'p50 ms':>7} {'p99 ms':>7}  ({c} server(s))")
    for rate in rates:
        for d in services:
            util = rate * d / 1000 / c
            if util >= 1:
                print(f"{rate:>6g} {d:>6g} {util:>5.2f}  overloaded")
                continue
            r = simulate(rate, d / 1000, args.requests, servers=c)
            print(
                f"{rate:>6g} {d:>6g} {util:>5.2f} {1000 * quantile(r, 0.5):>7.1f} "
                f"{1000 * quantile(r, 0.99):>7.1f}"
            )


if __name__ == "__main__":
    main()
