"""Does the upstream embedding lookup move the ranker's P99? An A/B under the same load.

    python -m loadtests.bench.lookup            # configs/online.json, N = 100, ~4 min
    python -m loadtests.bench.lookup --quick    # a tiny config, seconds: the smoke test

Two real rankers on one checkpoint and one seeded redis-server: lookup on (the embedding is
read in the same pipelined Redis round trip as the history, decoded and fed to DHEN) and
lookup off (``RANKER_UPSTREAM_LOOKUP_ENABLED=false``: the absent vector and flag). The same
seeded Poisson arrival sequence goes to each in alternating rounds, so drift in the machine's
background load falls on both. Reports the pooled P50/P99 of each, the P99 ratio on / off
pooled and per round pair, and the server's own Redis stage (Server-Timing ``redis``), which
is the lookup's direct cost: one more HGET in the same round trip and a 2048-value decode.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

import httpx

from loadtests.bench.common import Result, command_line, percentile
from loadtests.bench.http_load import server_timing
from loadtests.bench.ranker import (
    _JSON,
    UPSTREAM_VERSION,
    open_loop,
    request_bodies,
    seed_redis,
    start_ranker,
)
from loadtests.stack.checkpoints import random_checkpoint
from loadtests.stack.servers import RedisServer, ServiceProcess
from shared_model.config import online_config, tiny_config

VARIANTS = ("lookup on", "lookup off")


def redis_ms(header: str) -> float | None:
    """The ``redis;dur=X`` entry of a Server-Timing header, in ms."""
    return server_timing(header).get("redis")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny config, short rounds")
    parser.add_argument("--candidates", type=int, default=100, help="N per request")
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--rate", type=float, default=8.0, help="Poisson req/s")
    parser.add_argument("--rounds", type=int, default=8, help="round pairs")
    parser.add_argument("--round-s", type=float, default=10.0, help="seconds per round")
    parser.add_argument("--out", type=Path, default=None, help="result JSON path")
    args = parser.parse_args(argv)

    cfg = tiny_config("online") if args.quick else online_config()
    n, users = (10, 4) if args.quick else (args.candidates, args.users)
    rounds, round_s = (2, 1.0) if args.quick else (args.rounds, args.round_s)
    result = Result(
        "lookup",
        "P99 with the upstream embedding lookup vs without it",
        command_line("loadtests.bench.lookup", argv if argv is not None else sys.argv[1:]),
        description=(__doc__ or "").split("\n\n", 2)[2].strip(),
    )
    latencies: dict[str, list[float]] = {v: [] for v in VARIANTS}
    stage: dict[str, list[str]] = {v: [] for v in VARIANTS}
    failures = dict.fromkeys(VARIANTS, 0)
    pairs: list[float] = []
    procs: list[ServiceProcess] = []
    with tempfile.TemporaryDirectory(prefix="bench-lookup-") as tmp, RedisServer() as rd:
        ckpt = Path(tmp) / "online"
        random_checkpoint(ckpt, cfg, seed=0, upstream_model_version=UPSTREAM_VERSION)
        seed_redis(rd.client(), cfg, users, cfg.max_seq_len)
        bodies = request_bodies(cfg, users, n, 32)
        try:
            urls = {}
            for variant, enabled in zip(VARIANTS, ("true", "false"), strict=True):
                proc, urls[variant] = start_ranker(
                    variant.replace(" ", "-"), rd.url, ckpt, batch=8,
                    env={"RANKER_UPSTREAM_LOOKUP_ENABLED": enabled},
                )  # fmt: skip
                procs.append(proc)
            # What each variant does with the embedding (hit when on, disabled when off).
            outcomes = {
                v: httpx.post(
                    u, content=bodies[0], headers=_JSON, timeout=60, trust_env=False
                ).json()["upstream"]["outcome"]
                for v, u in urls.items()
            }
            for r in range(rounds):
                p99 = {}
                # Alternate which variant goes first, so neither always follows the other.
                for variant in VARIANTS if r % 2 == 0 else VARIANTS[::-1]:
                    run = asyncio.run(
                        open_loop(urls[variant], bodies, args.rate, round_s, seed=r,
                                  server_timing=stage[variant])
                    )  # fmt: skip
                    latencies[variant] += run.latencies_ms
                    failures[variant] += run.failures
                    p99[variant] = percentile(run.latencies_ms, 99)
                pairs.append(p99["lookup on"] / p99["lookup off"])
        finally:
            for p in reversed(procs):
                p.stop()

    table = result.table(
        f"Poisson {args.rate:g} req/s, N = {n}, T = {cfg.max_seq_len}: {rounds} alternating "
        f"rounds of {round_s:g} s per variant",
        ["variant", "embedding", "requests", "failed", "p50 ms", "p95 ms", "p99 ms",
         "server redis p50 ms", "server redis p99 ms"],
        note="Latency at the client (loopback HTTP); 'server redis' is the ranker's own "
        "Server-Timing redis entry: the pipelined read (history, plus the embedding when on).",
    )  # fmt: skip
    for variant in VARIANTS:
        lat = latencies[variant]
        reads = [x for x in map(redis_ms, stage[variant]) if x is not None]
        table.add(variant, outcomes[variant], len(lat), failures[variant], percentile(lat, 50),
                  percentile(lat, 95), percentile(lat, 99), percentile(reads, 50),
                  percentile(reads, 99))  # fmt: skip
    pooled = percentile(latencies["lookup on"], 99) / percentile(latencies["lookup off"], 99)
    result.data.update(rate=args.rate, candidates=n, rounds=rounds, round_s=round_s,
                       pair_ratios=pairs, latencies_ms=latencies)  # fmt: skip
    result.summary += [
        f"P99 ratio lookup on / off: {pooled:.3f} pooled, {statistics.median(pairs):.3f} median "
        f"of {rounds} round pairs (they span {min(pairs):.2f}-{max(pairs):.2f})",
        f"server Redis stage p50 on / off: {table.rows[0][7]:.2f} / {table.rows[1][7]:.2f} ms",
    ]
    result.write(args.out)


if __name__ == "__main__":
    main()
