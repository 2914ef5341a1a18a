"""Two inference threads sharing a backlog, one thread taking all of it, or no batching: the
latency tail.

    python -m loadtests.bench.batch_share              # configs/online.json, N = 100, ~10 min
    python -m loadtests.bench.batch_share --quick      # a tiny config, seconds: the smoke test

With two inference threads, a free thread's drain either takes its share of what has queued,
ceil(queued / 2) (``RANKER_BATCH_SHARE=true``, the default), or everything queued up to
``batch_max_requests`` (false). On a CPU a batch of G requests costs nearly G times one and
every request in it answers when the batch does, so the second policy can leave one thread
scoring a backlog of eight while the other idles. A third ranker does not micro-batch
(``RANKER_BATCH_MAX_REQUESTS=1``): each thread scores one request at a time, so no request
waits for a batch-mate's share of the step.

Starts a real redis-server, seeds it as ``loadtests.bench.ranker`` does (400 + 400 history
records per user, an upstream embedding, a catalogue of content vectors) and a checkpoint of
the online config with random weights, then three rankers on two inference threads: two
micro-batched (8) that differ only in ``RANKER_BATCH_SHARE``, and one that does not batch.
All stay up; the phases alternate between them (share, greedy, alone, rate by rate, for
``--reps`` rounds), so a quiet or a noisy moment of a shared machine favours none. An idle
ranker (one intra-op thread, no OpenMP workers) takes no CPU from the one measured. Per rate:
P50, P90 and P99 of all rounds pooled, the spread of the per-round P99s, and the mean batch
size from each ranker's ``ranker_model_batch_size`` histogram; then saturation (closed loop)
of each.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
from pathlib import Path

import httpx

from loadtests.bench.common import ISA_CAPS, Result, cap_isa, command_line, percentile
from loadtests.bench.ranker import (
    CATALOGUE,
    UPSTREAM_VERSION,
    closed_loop,
    open_loop,
    request_bodies,
    seed_content,
    seed_redis,
    serving,
    start_ranker,
    warm,
)
from loadtests.stack.checkpoints import random_checkpoint
from loadtests.stack.servers import RedisServer
from shared_model.config import online_config, tiny_config

# name -> (RANKER_BATCH_MAX_REQUESTS, RANKER_BATCH_SHARE)
POLICIES = {"share": (8, "true"), "greedy": (8, "false"), "alone": (1, "true")}
LANES = 2


def batch_histogram(rank_url: str) -> tuple[float, float]:
    """(sum, count) of the ranker's ``ranker_model_batch_size`` histogram."""
    base = rank_url.rsplit("/v1/", 1)[0]
    text = httpx.get(f"{base}/metrics", trust_env=False).text
    values = {}
    for line in text.splitlines():
        for part in ("sum", "count"):
            if line.startswith(f"ranker_model_batch_size_{part} "):
                values[part] = float(line.rsplit(" ", 1)[1])
    return values["sum"], values["count"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny config, short phases")
    parser.add_argument("--candidates", type=int, default=100, help="N per request")
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--rates", default="10,15,20,25", help="Poisson req/s")
    parser.add_argument("--round-s", type=float, default=20.0, help="seconds per rate and round")
    parser.add_argument("--reps", type=int, default=3, help="rounds per rate and policy")
    parser.add_argument("--out", type=Path, default=None, help="result JSON path")
    parser.add_argument(
        "--tag", default="", help="appended to the result's name (e.g. the machine: xeon-amx)"
    )
    parser.add_argument(
        "--isa", choices=sorted(ISA_CAPS), default=None,
        help="cap the instruction set of torch's CPU kernels at this one, in the rankers too",
    )  # fmt: skip
    args = parser.parse_args(argv)
    cap_isa(args.isa, "loadtests.bench.batch_share", argv if argv is not None else sys.argv[1:])
    cfg = tiny_config("online") if args.quick else online_config()
    n, users = (10, 4) if args.quick else (args.candidates, args.users)
    rates = [5.0, 10.0] if args.quick else [float(r) for r in args.rates.split(",")]
    round_s, reps = (1.0, 1) if args.quick else (args.round_s, args.reps)
    sat_s, sat_clients = (1.0, 4) if args.quick else (15.0, 8)

    tag = f"-{args.tag}" if args.tag else ""
    result = Result(
        "batch-share" + tag,
        "Micro-batching on two inference threads: sharing a backlog, one thread taking it, "
        "or none" + (f", {args.tag}" if args.tag else ""),
        command_line("loadtests.bench.batch_share", argv if argv is not None else sys.argv[1:]),
        description=(__doc__ or "").split("\n\n", 2)[2].strip(),
    )
    latencies: dict[tuple[str, float], list[float]] = {}
    round_p99: dict[tuple[str, float], list[float]] = {}
    batches: dict[tuple[str, float], list[float]] = {}
    saturation: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-share-") as tmp, RedisServer() as rd:
        ckpt = Path(tmp) / "online"
        random_checkpoint(ckpt, cfg, seed=0, upstream_model_version=UPSTREAM_VERSION)
        seed_redis(rd.client(), cfg, users, cfg.max_seq_len)
        seed_content(rd.client(), cfg, max(CATALOGUE, n))
        bodies = request_bodies(cfg, users, n, 32, "id", max(CATALOGUE, n))
        with contextlib.ExitStack() as stack:
            urls = {}
            for name, (batch, flag) in POLICIES.items():
                started = start_ranker(f"ranker-{name}", rd.url, ckpt, batch, threads=LANES,
                                       env={"RANKER_BATCH_SHARE": flag})  # fmt: skip
                urls[name] = stack.enter_context(serving(*started))[1]
            for url in urls.values():
                warm(url, bodies)
            for rep in range(reps):
                for i, rate in enumerate(rates):
                    for name, url in urls.items():
                        sum0, count0 = batch_histogram(url)
                        run = asyncio.run(open_loop(url, bodies, rate, round_s, seed=rep * 100 + i))
                        sum1, count1 = batch_histogram(url)
                        latencies.setdefault((name, rate), []).extend(run.latencies_ms)
                        round_p99.setdefault((name, rate), []).append(
                            percentile(run.latencies_ms, 99)
                        )
                        batches.setdefault((name, rate), []).append(
                            (sum1 - sum0) / max(1.0, count1 - count0)
                        )
            for name, url in urls.items():
                saturation[name] = asyncio.run(closed_loop(url, bodies, sat_clients, sat_s))

    table = result.table(
        f"Poisson arrivals: {reps} round(s) of {round_s:.0f} s per rate and policy, pooled",
        ["req/s", "policy", "p50 ms", "p90 ms", "p99 ms", "round p99s ms", "mean batch"],
        note="share: RANKER_BATCH_SHARE=true (a free thread takes ceil(queued / 2)); greedy: "
        "false (a free thread takes everything queued, up to 8); both batch_max_requests 8. "
        "alone: batch_max_requests 1 (no micro-batching). All: 2 inference threads, 1 "
        "intra-op thread each. 'round p99s': the lowest and highest "
        "P99 of the single rounds; 'mean batch': requests per model call in those rounds.",
    )
    ratios = []
    for rate in rates:
        p99 = {}
        for name in POLICIES:
            lat = latencies[(name, rate)]
            p99[name] = percentile(lat, 99)
            spread = round_p99[(name, rate)]
            table.add(
                rate, name, percentile(lat, 50), percentile(lat, 90), p99[name],
                f"{min(spread):.1f}-{max(spread):.1f}", statistics.mean(batches[(name, rate)]),
            )  # fmt: skip
        ratios.append((rate, p99))
    sat = result.table(
        "Saturation (closed loop)",
        ["policy", "clients", "req/s"],
        note="After the Poisson rounds, one ranker after the other.",
    )
    for name in POLICIES:
        sat.add(name, sat_clients, saturation[name])
    result.data.update(
        candidates=n,
        rates=rates,
        latencies_ms={f"{name} {rate:g}": v for (name, rate), v in latencies.items()},
    )
    result.summary += [
        f"P99, {other} / share: "
        + ", ".join(
            f"{r:g} req/s {p[other] / p['share']:.2f}x ({p['share']:.1f} vs {p[other]:.1f} ms)"
            for r, p in ratios
        )
        for other in ("greedy", "alone")
    ] + [
        f"saturation, share / {other}: {saturation['share'] / saturation[other]:.2f}x "
        f"({saturation['share']:.1f} vs {saturation[other]:.1f} req/s)"
        for other in ("greedy", "alone")
    ]
    result.write(args.out)


if __name__ == "__main__":
    main()
