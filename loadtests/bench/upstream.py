"""``python -m loadtests.bench.upstream``: upstream encode cost on a realistic length mix.

Users' history lengths are drawn log-uniform in [10, T] (a heavy-tailed mix: most users are
short, a few are long). One batch of B such users is encoded two ways in the same run:
padded to T (the reference) and length-aware (``UserEncoder.embed``: users in length buckets,
each cut to its longest history). Reported: users/s, real (non-padding) events/s, and the
time against the FLOPs floor of the real tokens (``shared_model.flops`` at each user's true
length, over ``matmul_rate`` measured in the same run).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import random
import sys
import time
from pathlib import Path

import torch

from loadtests.bench.common import Result, command_line, matmul_rate
from shared_model.checkpoint import build_model
from shared_model.config import LLaTTEConfig
from shared_model.contract import ActionType, EmbeddingDType, HistoryRecord, stable_hash
from shared_model.flops import sequence_flops
from upstream_service.encoder import UserEncoder

CONFIGS = Path(__file__).resolve().parents[2] / "shared_model" / "configs"


def log_uniform_lengths(rng: random.Random, n: int, low: int, high: int) -> list[int]:
    return [round(math.exp(rng.uniform(math.log(low), math.log(high)))) for _ in range(n)]


def history(rng: random.Random, n: int, content_dim: int, end_ms: int) -> list[HistoryRecord]:
    return [
        HistoryRecord(
            timestamp_ms=end_ms - (n - i) * 60_000,
            action_type=rng.choice(list(ActionType)[:4]),
            item_hash=stable_hash(f"item-{rng.randrange(100_000)}"),
            surface_hash=stable_hash("feed"),
            event_hash=rng.getrandbits(63),
            value=0.0,
            content=tuple(rng.uniform(-1, 1) for _ in range(content_dim)) if content_dim else None,
        )
        for i in range(n)
    ]


def real_token_flops(cfg: LLaTTEConfig, n: int) -> int:
    """Sequence FLOPs of one user encoded at its true length n (no padding)."""
    n = max(1, n)
    pyramid = [min(p, n) for p in cfg.pyramid]
    return sequence_flops(dataclasses.replace(cfg, max_seq_len=n, pyramid=pyramid)).total


def seconds_per_call(fn, min_seconds: float) -> float:
    fn()  # warm-up
    calls, began = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - began) < min_seconds or calls < 2:
        fn()
        calls += 1
    return elapsed / calls


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", type=Path, default=CONFIGS / "upstream.json")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--min-length", type=int, default=10)
    p.add_argument("--min-seconds", type=float, default=3.0)
    p.add_argument("--quick", action="store_true", help="demo config, short timings")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.config = CONFIGS / "demo_upstream.json"
        args.min_seconds = min(args.min_seconds, 0.2)
    cfg = LLaTTEConfig.from_json(args.config)
    torch.manual_seed(0)
    model = build_model(cfg)
    encoder = UserEncoder(model, cfg, "bench", dtype=EmbeddingDType.FLOAT32)
    T = cfg.max_seq_len
    rng = random.Random(0)
    lengths = log_uniform_lengths(rng, args.batch, args.min_length, T)
    now = int(time.time() * 1000)
    users = [f"u{i}" for i in range(args.batch)]
    histories = [history(rng, n, cfg.content_dim, now) for n in lengths]
    rate = matmul_rate()
    floor_s = sum(real_token_flops(cfg, n) for n in lengths) / rate

    result = Result(
        "upstream",
        "Upstream encode on a heavy-tailed length mix",
        command_line("loadtests.bench.upstream", argv if argv is not None else sys.argv[1:]),
        description=__doc__.split("\n\n", 1)[1].strip(),
    )
    table = result.table(
        f"B = {args.batch}, lengths log-uniform in [{args.min_length}, {T}] "
        f"(mean {sum(lengths) / len(lengths):.0f}), {args.config.name}, float32",
        ["path", "ms/batch", "users/s", "real events/s", "x real-token floor"],
    )
    timings = {}
    for name, aware in (("padded to T", False), ("length-aware", True)):
        s = seconds_per_call(lambda a=aware: encoder.embed(users, histories, a), args.min_seconds)
        timings[name] = s
        table.add(name, 1000 * s, args.batch / s, sum(lengths) / s, s / floor_s)
    speedup = timings["padded to T"] / timings["length-aware"]
    result.summary = [
        f"length-aware speedup: {speedup:.2f}x",
        f"real-token floor ratio: {timings['length-aware'] / floor_s:.2f}x",
        f"matmul floor: {rate / 1e9:.1f} GFLOP/s float32",
    ]
    result.data = {"lengths": lengths, "matmul_flops": rate, "floor_s": floor_s, **timings}
    result.write(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
