"""Model micro-benchmark: ``make bench-model`` (``python -m shared_model.bench``).

Prints, for this machine and in one run:
* the measured dense matmul rate (fp32 on CPU; bf16 too on a GPU), used as the FLOPs floor;
* online ``score()`` latency for N candidates at T = 400, shared-sequence vs naive per-candidate,
  their ratio, and each against its FLOPs floor (counted FLOPs / matmul rate);
* upstream ``encode_user()`` users/s at T = 1000 for several batch sizes, against its floor.

Writes the table as Markdown to ``--out`` (default docs/benchmarks/model.md). A benchmark,
not a test: it asserts nothing; it reports the targets and whether this run met them.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

from shared_model.config import online_config, upstream_config
from shared_model.features import Candidates, Context, EventBatch, UpstreamFeature
from shared_model.flops import scoring_flops, sequence_flops
from shared_model.inference import encode_user, score
from shared_model.ranker import RankerModel
from shared_model.upstream import UpstreamModel

NOW_MS = 1_750_000_000_000


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int = 1024, seconds: float = 1.0):
    """Sustained FLOP/s of an n x n x n matmul."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        reps += 1
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start)


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
    return Candidates(
        ids[0],
        ids[1],
        torch.randn(N, content_dim),
        torch.ones(N, dtype=torch.bool),
        torch.rand(N, n_floats),
    )


def _time(fn, device: torch.device, min_reps: int, min_seconds: float) -> float:
    """Median seconds per call after one warm-up call."""
    fn()
    _sync(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
        if len(times) >= 50:
            break
    return statistics.median(times)


def bench_ranker(device, dtype, rate, ns, quick) -> list[str]:
    cfg = online_config()
    model = RankerModel(cfg).to(device).eval()
    ev, ctx = _events(1, cfg.max_seq_len, cfg.content_dim), _context(1)
    up = UpstreamFeature(torch.randn(1, cfg.d_upstream), torch.ones(1, dtype=torch.bool))
    rows = [
        "| N | shared ms | naive ms | naive / shared | shared floor ms | shared / floor "
        "| naive floor ms | naive / floor |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in ns:
        cands = _candidates(n, cfg.content_dim, cfg.n_candidate_floats)
        ac = dtype if dtype != torch.float32 else None
        t_shared = _time(
            lambda c=cands, a=ac: score(model, ev, ctx, c, up, shared=True, autocast_dtype=a),
            device,
            5,
            1.0,
        )
        reps = 1 if (quick or n >= 100) else 3
        t_naive = _time(
            lambda c=cands, a=ac: score(model, ev, ctx, c, up, shared=False, autocast_dtype=a),
            device,
            reps,
            0.0,
        )
        f_shared = scoring_flops(cfg, n, shared=True) / rate
        f_naive = scoring_flops(cfg, n, shared=False) / rate
        rows.append(
            f"| {n} | {1e3 * t_shared:.2f} | {1e3 * t_naive:.1f} | {t_naive / t_shared:.1f}x "
            f"| {1e3 * f_shared:.3f} | {t_shared / f_shared:.1f}x | {1e3 * f_naive:.1f} "
            f"| {t_naive / f_naive:.1f}x |"
        )
        print(rows[-1], flush=True)
    return rows


def bench_upstream(device, dtype, rate, batches, T) -> list[str]:
    cfg = upstream_config(max_seq_len=T, pyramid=[T] * 5 + [0])
    model = UpstreamModel(cfg).to(device).eval()
    per_user = sequence_flops(cfg).total
    rows = [
        "| batch | T | ms / batch | users / s | floor users / s | time / floor | MFU |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for b in batches:
        ev, ctx = _events(b, T, cfg.content_dim), _context(b)
        ac = dtype if dtype != torch.float32 else None
        t = _time(
            lambda e=ev, c=ctx, a=ac: encode_user(model, e, c, autocast_dtype=a), device, 2, 0.0
        )
        floor = per_user * b / rate
        rows.append(
            f"| {b} | {T} | {1e3 * t:.0f} | {b / t:.1f} | {b / floor:.1f} "
            f"| {t / floor:.2f}x | {100 * floor / t:.0f}% |"
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--dtype",
        default=None,
        choices=["float32", "bfloat16"],
        help="default: bfloat16 on CUDA, float32 on CPU",
    )
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (CPU)")
    p.add_argument("--candidates", default="1,10,100,500")
    p.add_argument("--batches", default="1,8,32")
    p.add_argument("--upstream-T", type=int, default=1000)
    p.add_argument("--quick", action="store_true", help="fewer repetitions")
    p.add_argument("--out", default="docs/benchmarks/model.md")
    args = p.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    rate = matmul_rate(device, dtype)
    machine = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{platform.processor() or platform.machine()}, {args.threads} threads"
    )
    head = [
        f"Machine: {machine}; torch {torch.__version__}; dtype {str(dtype).split('.')[-1]}.",
        f"Measured dense matmul rate (1024^3): {rate / 1e9:.1f} GFLOP/s — the FLOPs floor is "
        "counted FLOPs / this rate, in the same run.",
        "",
    ]
    print("\n".join(head))
    ns = [int(x) for x in args.candidates.split(",")]
    print("### Online score(): one user, N candidates, T = 400 (online_config)\n")
    ranker_rows = bench_ranker(device, dtype, rate, ns, args.quick)
    print("\n### Upstream encode_user() (upstream_config)\n")
    batches = [int(x) for x in args.batches.split(",")]
    upstream_rows = bench_upstream(device, dtype, rate, batches, args.upstream_T)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = "python -m shared_model.bench " + " ".join(
        f"--{k.replace('_', '-')} {v}"
        for k, v in vars(args).items()
        if v not in (None, False) and k != "out"
    )
    out.write_text(
        "\n".join(
            [
                "<!-- written by shared_model/bench.py -->",
                f"Command: `{cmd}`",
                "",
                *head,
                "### Online score(): one user, N candidates, T = 400",
                "",
                *ranker_rows,
                "",
                "### Upstream encode_user()",
                "",
                *upstream_rows,
                "",
            ]
        )
    )
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
