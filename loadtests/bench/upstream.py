"""``python -m loadtests.bench.upstream``: upstream encode cost on realistic length mixes.

Length mixes (the default): one batch of B users is encoded two ways in the same run, padded
to T (the reference) and length-aware (``UserEncoder.embed``: least-cost length groups, each
cut to its longest history), for two length mixes: log-uniform in [10, T] (heavy-tailed: most
users short, a few long) and the synthetic world's users after ``--world-days`` days of
activity (``shared_model.data.synthetic``, their real events, capped at T). Reported: users/s,
real (non-padding) events/s, and the time against the FLOPs floor of the real tokens
(``shared_model.flops`` at each user's true length, over ``matmul_rate`` measured in the same
run), from the fastest of alternating calls.

Batch-size sweep (``--batch-sizes``, for a GPU: ``--device cuda --dtype bf16``): every user
has T events; per batch size, the model step alone (inputs already on the device) as users/s
and MFU against the matmul rate of that dtype measured in the same run, and the whole encoder
(features built on the host, on CUDA into pinned memory copied on a side stream, then the
model) as users/s. Both modes also print the host cost per user of a full history: decoding
its stored records and building the batch. Needs only torch (and numpy for the synthetic
world).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from loadtests.bench.common import Result, command_line, matmul_rate
from shared_model.config import LLaTTEConfig
from shared_model.contract import ActionType, EmbeddingDType, HistoryRecord, stable_hash
from shared_model.features import EventBatch
from shared_model.inference import encode_user
from shared_model.upstream import UpstreamModel
from upstream_service.encoder import UserEncoder, history_flops

CONFIGS = Path(__file__).resolve().parents[2] / "shared_model" / "configs"
DTYPES = {"fp32": None, "bf16": torch.bfloat16}


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


def world_histories(n_users: int, days: float, content_dim: int, T: int) -> list[list]:
    """The synthetic world's first n_users users: their events over ``days``, the last T."""
    from shared_model.data.synthetic import (  # numpy; only this workload needs it
        DEFAULT_START_MS,
        MS_PER_DAY,
        SyntheticWorld,
        WorldConfig,
    )

    world = SyntheticWorld(WorldConfig(seed=0, n_users=n_users, content_dim=content_dim))
    per_user: list[list[HistoryRecord]] = [[] for _ in range(n_users)]
    for raw in world.stream_raw(DEFAULT_START_MS, int(days * MS_PER_DAY)):
        per_user[raw.user].append(world.to_user_event(raw).to_history_record())
    return [h[-T:] for h in per_user]


def seconds_per_call(fn: Callable[[], object], min_seconds: float, sync=lambda: None) -> float:
    fn()  # warm-up
    sync()
    calls, began = 0, time.perf_counter()
    while time.perf_counter() - began < min_seconds or calls < 2:
        fn()
        calls += 1
        if calls % 4 == 0:
            sync()
    sync()
    return (time.perf_counter() - began) / calls


def length_mix_table(result, encoder, cfg, name, histories, repeats) -> tuple[float, float]:
    """Padded vs length-aware on one mix; returns (speedup, real-token floor ratio).

    On a shared machine other processes only ever add time, so each path's figure is its
    fastest call, and the matmul rate its fastest measurement. The calls alternate between
    the two paths (and the rate is re-measured before each round), so load drift falls on
    both alike.
    """
    lengths = [len(h) for h in histories]
    users = [f"u{i}" for i in range(len(histories))]
    paths = {"padded to T": False, "length-aware": True}
    calls: dict[str, list[float]] = {path: [] for path in paths}
    rates = []
    for aware in paths.values():
        encoder.embed(users, histories, aware)  # warm-up
    for r in range(repeats):
        rates.append(matmul_rate(seconds=0.5))
        for path in list(paths)[:: 1 if r % 2 == 0 else -1]:
            began = time.perf_counter()
            encoder.embed(users, histories, paths[path])
            calls[path].append(time.perf_counter() - began)
    rate = max(rates)
    floor_s = sum(history_flops(cfg, n) for n in lengths) / rate
    table = result.table(
        f"{name}: B = {len(lengths)}, lengths {min(lengths)}-{max(lengths)} "
        f"(mean {sum(lengths) / len(lengths):.0f}, T = {cfg.max_seq_len})",
        ["path", "best ms/batch", "median ms/batch", "users/s", "real events/s",
         "x real-token floor", "forwards"],
        note=f"Best and median of {repeats} alternating calls per path; the floor at the best "
        f"of {repeats} matmul measurements ({rate / 1e9:.1f} GFLOP/s float32).",
    )  # fmt: skip
    best = {path: min(times) for path, times in calls.items()}
    for path, aware in paths.items():
        s = best[path]
        forwards = len(encoder.plan(lengths, aware))
        table.add(path, 1000 * s, 1000 * statistics.median(calls[path]), len(lengths) / s,
                  sum(lengths) / s, s / floor_s, forwards)  # fmt: skip
    result.data[name] = {"lengths": lengths, "floor_s": floor_s, "calls_s": calls, "rates": rates}
    return best["padded to T"] / best["length-aware"], best["length-aware"] / floor_s


def host_feature_ms(cfg: LLaTTEConfig, users: int = 8, min_seconds: float = 0.5) -> tuple:
    """Host cost per user of a full T-event history: (decode the stored records, build the
    batch), in ms, on this thread: what feeds the model before any device work."""
    rng = random.Random(1)
    now = int(time.time() * 1000)
    stored = [[r.encode() for r in history(rng, cfg.max_seq_len, cfg.content_dim, now)]]
    stored *= users
    decoded = [[HistoryRecord.decode(b) for b in h] for h in stored]
    decode_s = seconds_per_call(
        lambda: [[HistoryRecord.decode(b) for b in h] for h in stored], min_seconds
    )
    batch_s = seconds_per_call(
        lambda: EventBatch.from_records(decoded, cfg.max_seq_len, cfg.content_dim), min_seconds
    )
    return 1000 * decode_s / users, 1000 * batch_s / users


def host_feature_line(cfg: LLaTTEConfig) -> str:
    decode_ms, batch_ms = host_feature_ms(cfg)
    return (
        f"host features per {cfg.max_seq_len}-event user: decode {decode_ms:.2f} ms + batch "
        f"{batch_ms:.2f} ms ({1000 / (decode_ms + batch_ms):.0f} users/s on one core)"
    )


def run_length_mixes(args, result: Result, cfg: LLaTTEConfig, encoder: UserEncoder) -> None:
    T = cfg.max_seq_len
    rng = random.Random(0)
    now = int(time.time() * 1000)
    lengths = log_uniform_lengths(rng, args.batch, args.min_length, T)
    mixes = {
        f"log-uniform {args.min_length}-{T}": [
            history(rng, n, cfg.content_dim, now) for n in lengths
        ]
    }
    if args.world_days > 0:
        mixes[f"synthetic world, {args.world_days:g} days"] = world_histories(
            args.batch, args.world_days, cfg.content_dim, T
        )
    encoder.calibrate()
    ratios = {
        name: length_mix_table(result, encoder, cfg, name, hs, args.repeats)
        for name, hs in mixes.items()
    }
    (_, (speedup, floor)), *others = ratios.items()
    result.summary = [
        f"length-aware speedup: {speedup:.2f}x",
        f"real-token floor ratio: {floor:.2f}x",
        *(
            f"{name}: length-aware speedup {s:.2f}x, floor ratio {f:.2f}x"
            for name, (s, f) in others
        ),
        f"torch threads: {torch.get_num_threads()}",
        host_feature_line(cfg),
    ]
    result.data.update(group_overhead_flops=encoder.group_overhead_flops)


def run_sweep(args, result: Result, cfg: LLaTTEConfig, encoder: UserEncoder) -> None:
    device = encoder.device
    T = cfg.max_seq_len
    matmul_dtype = "bfloat16" if args.dtype == "bf16" else "float32"
    rate = matmul_rate(str(device), matmul_dtype, n=8192 if encoder.cuda else 1024, seconds=1.0)
    flops_per_user = history_flops(cfg, T)
    rng = random.Random(0)
    now = int(time.time() * 1000)
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    pool = [history(rng, T, cfg.content_dim, now) for _ in range(max(sizes))]

    def sync() -> None:
        if encoder.cuda:
            torch.cuda.synchronize(device)

    table = result.table(
        f"T = {T} for every user, {args.config.name}, {args.dtype} on {device}",
        ["batch", "model ms", "model users/s", "MFU", "encoder users/s", "encoder events/s"],
        note="model = the forward on inputs already on the device; encoder = features from "
        "history records built on the host (on CUDA: pinned, copied on a side stream while the "
        "previous chunk computes), forward, vectors back on the host.",
    )
    best = 0.0
    for B in sizes:
        users, histories = [f"u{i}" for i in range(B)], pool[:B]
        events = EventBatch.from_records(histories, T, cfg.content_dim).to(device)
        ctx = encoder.context(users, histories).to(device)
        model_s = seconds_per_call(
            lambda e=events, c=ctx: encode_user(encoder.model, e, c, encoder.autocast_dtype),
            args.min_seconds,
            sync,
        )
        encoder_s = seconds_per_call(
            lambda u=users, h=histories: encoder.embed(u, h), args.min_seconds / 2, sync
        )
        mfu = B * flops_per_user / model_s / rate
        best = max(best, mfu)
        table.add(
            B, 1000 * model_s, B / model_s, f"{100 * mfu:.1f}%", B / encoder_s, B * T / encoder_s
        )
    # The same users through the float32 CPU reference (a short and a full history).
    reference = UserEncoder(copy.deepcopy(encoder.model).float().cpu(), cfg, "bench")
    users, histories = ["a", "b"], [pool[0][-37:], pool[1]]
    want = reference.embed(users, histories, length_aware=False)
    got = encoder.embed(users, histories)
    error = ((got - want).norm(dim=-1) / want.norm(dim=-1)).max().item()
    result.summary = [
        f"best MFU: {100 * best:.1f}% of the measured {args.dtype} matmul rate",
        f"{args.dtype} on {device} vs the float32 CPU reference: relative error {error:.2g}",
        f"matmul rate: {rate / 1e12:.2f} TFLOP/s {matmul_dtype} (same run)",
        f"FLOPs per user at T = {T}: {flops_per_user / 1e9:.1f} GFLOP",
        host_feature_line(cfg),
    ]
    result.data.update(
        matmul_flops=rate, flops_per_user=flops_per_user, batch_sizes=sizes, relative_error=error
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", type=Path, default=CONFIGS / "upstream.json")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="autocast dtype")
    p.add_argument("--history-length", type=int, help="T (default: the config's max_seq_len)")
    p.add_argument("--batch", type=int, default=32, help="users per batch of the length mixes")
    p.add_argument("--batch-sizes", help="sweep these batch sizes at T instead (e.g. 8,16,32)")
    p.add_argument("--min-length", type=int, default=10, help="shortest log-uniform length")
    p.add_argument("--world-days", type=float, default=7.0, help="0 skips the world mix")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--min-seconds", type=float, default=3.0, help="sweep: timing per batch size")
    p.add_argument("--repeats", type=int, default=3, help="length mixes: calls per path")
    p.add_argument("--quick", action="store_true", help="demo config, short timings")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.config = CONFIGS / "demo_upstream.json"
        args.min_seconds = min(args.min_seconds, 0.2)
        args.repeats = min(args.repeats, 2)
        args.world_days = min(args.world_days, 1.0)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = LLaTTEConfig.from_json(args.config)
    if args.history_length:
        T = args.history_length
        cfg = dataclasses.replace(cfg, max_seq_len=T, pyramid=[min(p, T) for p in cfg.pyramid])
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = UpstreamModel(cfg).to(device)
    encoder = UserEncoder(
        model, cfg, "bench", dtype=EmbeddingDType.FLOAT32, autocast_dtype=DTYPES[args.dtype]
    )
    sweep = args.batch_sizes is not None
    result = Result(
        f"upstream-{device.type}-sweep" if sweep else "upstream",
        f"Upstream encode, {args.dtype} on {device.type.upper()}: "
        + ("batch sizes at full length" if sweep else "padded vs length-aware length mixes"),
        command_line("loadtests.bench.upstream", argv if argv is not None else sys.argv[1:]),
        description=__doc__.split("\n\n", 1)[1].strip(),
    )
    (run_sweep if sweep else run_length_mixes)(args, result, cfg, encoder)
    result.write(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
