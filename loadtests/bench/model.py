"""Model micro-benchmark: ``make bench-model`` (``python -m loadtests.bench.model``).

Measures, on this machine and in one run:

* the dense matmul rate (fp32 on CPU; bf16 on a GPU): the FLOPs floor is counted FLOPs / rate;
* online ``score()`` latency for one user and N candidates at the online config's T,
  shared-sequence vs the naive per-candidate path, their ratio, and each against its floor;
* upstream ``encode_user()`` users/s for several batch sizes at each T of ``--history-length``;
* the configured sequence FLOPs of both stages and their ratio (counted, not timed).

Writes one result (``docs/benchmarks/results/model.json`` unless ``--out``); the page is drawn
from it by ``python -m loadtests.reports.render``. A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from loadtests.bench.common import Result, command_line, matmul_rate
from shared_model.config import online_config, upstream_config
from shared_model.features import Candidates, Context, EventBatch, UpstreamFeature
from shared_model.flops import scoring_flops, sequence_flops
from shared_model.inference import encode_user, score
from shared_model.ranker import RankerModel
from shared_model.upstream import UpstreamModel

NOW_MS = 1_750_000_000_000


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _events(B: int, T: int, content_dim: int) -> EventBatch:
    ev = EventBatch.empty(B, T, content_dim)
    ev.timestamps_ms[:] = NOW_MS - torch.randint(0, 10**9, (B, T)).sort(1, True).values
    ev.action_type[:] = torch.randint(1, 6, (B, T))
    ev.item_hash[:] = torch.randint(0, 2**62, (B, T))
    ev.surface_hash[:] = torch.randint(0, 2**62, (B, T))
    ev.content[:] = torch.randn(B, T, content_dim)
    ev.valid[:] = True
    return ev


def _context(B: int) -> Context:
    ids = torch.randint(0, 2**62, (3, B))
    return Context(torch.full((B,), NOW_MS), ids[0], ids[1], ids[2])


def _candidates(N: int, content_dim: int, n_floats: int) -> Candidates:
    ids = torch.randint(0, 2**62, (2, N))
    has_content = torch.ones(N, dtype=torch.bool)
    return Candidates(ids[0], ids[1], torch.randn(N, content_dim), has_content,
                      torch.rand(N, n_floats))  # fmt: skip


def call_seconds(
    fn: Callable[[], object],
    device: torch.device,
    min_reps: int,
    min_seconds: float,
    max_reps: int = 50,
) -> list[float]:
    """Seconds of each call after one warm-up call (device synchronised after every call)."""
    fn()
    _sync(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
        if len(times) >= max_reps:
            break
    return times


def median_seconds(
    fn: Callable[[], object], device: torch.device, min_reps: int, min_seconds: float
) -> float:
    """Median seconds per call after one warm-up call (at most 50 calls)."""
    return statistics.median(call_seconds(fn, device, min_reps, min_seconds))


def p99(times: list[float]) -> float:
    """The 99th percentile (nearest rank) of per-call times."""
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, max(0, round(0.99 * len(ordered)) - 1))]


def bench_scoring(result: Result, device, dtype, rate: float, ns: list[int], quick: bool):
    cfg = online_config()
    model = RankerModel(cfg).to(device).eval()
    ev, ctx = _events(1, cfg.max_seq_len, cfg.content_dim), _context(1)
    up = UpstreamFeature(torch.randn(1, cfg.d_upstream), torch.ones(1, dtype=torch.bool))
    ac = dtype if dtype != torch.float32 else None
    table = result.table(
        f"Online score(): one user, N candidates, T = {cfg.max_seq_len} (online_config)",
        ["N", "shared ms", "shared p99 ms", "naive ms", "naive / shared", "shared floor ms",
         "shared / floor", "naive floor ms", "naive / floor"],
        note="floor = counted FLOPs / the matmul rate measured in the same run; shared ms is "
        "the median and p99 the 99th percentile of up to 200 calls (1 s at least), each "
        "synchronised with the device: the model step alone, no HTTP or feature building",
    )  # fmt: skip
    for n in ns:
        c = _candidates(n, cfg.content_dim, cfg.n_candidate_floats)
        times = call_seconds(
            lambda c=c: score(model, ev, ctx, c, up, shared=True, autocast_dtype=ac),
            device, 5, 1, max_reps=200,
        )  # fmt: skip
        t_shared, t_p99 = statistics.median(times), p99(times)
        reps = 1 if (quick or n >= 100) else 3
        t_naive = median_seconds(
            lambda c=c: score(model, ev, ctx, c, up, shared=False, autocast_dtype=ac),
            device, reps, 0.0,
        )  # fmt: skip
        f_shared = scoring_flops(cfg, n, shared=True) / rate
        f_naive = scoring_flops(cfg, n, shared=False) / rate
        table.add(n, 1e3 * t_shared, 1e3 * t_p99, 1e3 * t_naive, t_naive / t_shared,
                  1e3 * f_shared, t_shared / f_shared, 1e3 * f_naive,
                  t_naive / f_naive)  # fmt: skip
        result.data.setdefault("scoring", []).append(
            {"n": n, "shared_s": t_shared, "shared_p99_s": t_p99, "naive_s": t_naive}
        )
        if n == 100:
            result.summary.append(
                f"shared-sequence scoring at N = 100: {t_naive / t_shared:.1f}x faster than the "
                f"naive per-candidate path ({1e3 * t_shared:.1f} ms vs {1e3 * t_naive:.0f} ms), "
                f"{t_shared / f_shared:.1f}x its FLOPs floor"
            )


def scoring_plot(result: Result) -> None:
    rows = result.data.get("scoring", [])
    result.data.setdefault("plots", []).append(
        {
            "file": f"{result.benchmark}-scoring.png",
            "title": "online score(): one user, N candidates",
            "xlabel": "candidates N",
            "ylabel": "ms",
            "x": [r["n"] for r in rows],
            "series": {
                "shared sequence": [1e3 * r["shared_s"] for r in rows],
                "naive per candidate": [1e3 * r["naive_s"] for r in rows],
            },
            "logx": True,
            "logy": True,
        }
    )


def bench_encode(result: Result, device, dtype, rate: float, batches: list[int], T: int):
    cfg = upstream_config(max_seq_len=T, pyramid=[T] * 5 + [0])
    model = UpstreamModel(cfg).to(device).eval()
    per_user = sequence_flops(cfg).total
    ac = dtype if dtype != torch.float32 else None
    table = result.table(
        f"Upstream encode_user(): T = {T} (upstream_config)",
        ["batch", "T", "ms / batch", "users / s", "floor users / s", "time / floor", "MFU %"],
        note="MFU = floor time / measured time, against the measured matmul rate",
    )
    for b in batches:
        ev, ctx = _events(b, T, cfg.content_dim), _context(b)
        t = median_seconds(
            lambda e=ev, c=ctx: encode_user(model, e, c, autocast_dtype=ac), device, 2, 0.0
        )
        floor = per_user * b / rate
        table.add(b, T, 1e3 * t, b / t, b / floor, t / floor, 100 * floor / t)
        result.data.setdefault("encode", []).append({"batch": b, "T": T, "seconds": t})
    plots = result.data.setdefault("plots", [])
    spec = next((p for p in plots if p["file"] == f"{result.benchmark}-encode.png"), None)
    if spec is None:
        spec = {"file": f"{result.benchmark}-encode.png", "title": "upstream encode_user()",
                "xlabel": "batch", "ylabel": "users / s", "x": batches, "series": {},
                "logx": True}  # fmt: skip
        plots.append(spec)
    spec["series"][f"T = {T}"] = [row[3] for row in table.rows]
    last = table.rows[-1]
    result.summary.append(
        f"upstream encode_user at T = {T}, batch {last[0]}: {last[3]:.1f} users/s, "
        f"{last[5]:.2f}x its FLOPs floor"
    )


def flops_table(result: Result) -> None:
    up, on = upstream_config(), online_config()
    table = result.table(
        "Configured sequence FLOPs (counted by shared_model.flops)",
        ["config", "L", "d", "T", "pyramid", "GFLOPs / sample"],
    )
    for name, cfg in (("upstream", up), ("online", on)):
        gflops = sequence_flops(cfg).total / 1e9
        table.add(name, cfg.n_layers, cfg.d_model, cfg.max_seq_len, str(cfg.pyramid), gflops)
    ratio = sequence_flops(up).total / sequence_flops(on).total
    result.data["sequence_flops_ratio"] = ratio
    result.summary.append(f"upstream / online sequence FLOPs: {ratio:.1f}x (paper: > 45x)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=["float32", "bfloat16"],
                   help="default: bfloat16 on CUDA, float32 on CPU")  # fmt: skip
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (CPU)")
    p.add_argument("--candidates", default="1,10,100,500")
    p.add_argument("--batches", default="1,8,32")
    p.add_argument("--history-length", default="1000", help="upstream T, or a list: 250,500,1000")
    p.add_argument("--upstream-T", dest="history_length", help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true", help="fewer repetitions")
    p.add_argument("--out", type=Path, help="result JSON (default docs/benchmarks/results/)")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    # One page per device: a GPU run does not replace the CPU figures.
    result = Result(
        benchmark="model" if device.type == "cpu" else f"model-{device.type}",
        title="Model micro-benchmark" + ("" if device.type == "cpu" else f" ({device.type})"),
        command=command_line("loadtests.bench.model", sys.argv[1:] if argv is None else argv),
        description=(
            "Online scoring latency (shared-sequence vs naive per-candidate) and upstream "
            "encode throughput with random weights (latency does not depend on them), each "
            f"against its FLOPs floor; device {device.type}, dtype {str(dtype).split('.')[-1]}."
        ),
    )
    # A GPU needs a large product to reach its rate (1024^3 is launch-bound on an H100/H200).
    n = 1024 if device.type == "cpu" else 8192
    rate = matmul_rate(device.type, str(dtype).split(".")[-1], n=n)
    result.data["matmul_flops_per_s"] = rate
    result.summary.append(f"measured dense matmul rate ({n}^3): {rate / 1e9:.1f} GFLOP/s")
    bench_scoring(result, device, dtype, rate, [int(x) for x in args.candidates.split(",")],
                  args.quick)  # fmt: skip
    scoring_plot(result)
    for T in (int(x) for x in str(args.history_length).split(",")):
        bench_encode(result, device, dtype, rate, [int(x) for x in args.batches.split(",")], T)
    flops_table(result)
    result.write(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
