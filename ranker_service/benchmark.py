"""Ranker benchmark: prints a table and writes docs/benchmarks/ranker.md.

    .venv/bin/python -m ranker_service.benchmark            # about 5 minutes on 2 cores

1. Model latency (in process, the service's thread settings) for N = 1, 10, 100, 500
   candidates at T = 400: shared-history scoring, and the naive per-candidate reference for
   N <= 100 (target: shared at least 20x faster at N = 100).
2. End to end through HTTP: a real redis-server and two uvicorn ranker processes on the same
   checkpoint, one with the upstream embedding lookup and one with it switched off; sequential
   latency per N, then the same open-loop load (Poisson arrivals, N = 100) sent to each in
   alternating rounds, and the P99 of both (paper: no measurable change; target ratio <= 1.05).

Uses the trained checkpoint at artifacts/demo/online when there is one with T = 400, else
``online_config()`` with random weights (latency does not depend on the weights).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path

import httpx
import redis
import torch

from ranker_service.features import decide_embedding
from ranker_service.settings import Settings
from ranker_service.store import FeatureStore
from shared_model.checkpoint import build_model, load_checkpoint, save_checkpoint
from shared_model.config import LLaTTEConfig, online_config
from shared_model.contract import (
    EMBEDDING_FIELD_NEWEST,
    EMBEDDING_FIELD_RECORD,
    ActionType,
    EmbeddingRecord,
    HistoryRecord,
    embedding_key,
    history_key,
    source_of,
    stable_hash,
)
from shared_model.features import Candidates, Context, EventBatch, UpstreamFeature
from shared_model.inference import score

REPO = Path(__file__).resolve().parent.parent
DEMO_CHECKPOINT = REPO / "artifacts" / "demo" / "online"
BENCH_UPSTREAM = "bench-upstream-v1"
SIZES = (1, 10, 100, 500)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------
# inputs
# ------------------------------------------------------------------------------------------


def make_history(cfg: LLaTTEConfig, n: int, now_ms: int, seed: int) -> list[HistoryRecord]:
    g = torch.Generator().manual_seed(seed)
    actions = list(ActionType)
    return [
        HistoryRecord(
            timestamp_ms=now_ms - 60_000 * (n - i),
            action_type=actions[i % len(actions)],
            item_hash=stable_hash(f"item-{(i * 7919) % 5000}"),
            surface_hash=stable_hash("feed"),
            event_hash=stable_hash(f"{seed}-{i}"),
            value=1.0,
            content=tuple(torch.randn(cfg.content_dim, generator=g).tolist()),
        )
        for i in range(n)
    ]


def make_candidates_json(cfg: LLaTTEConfig, n: int, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    E, F = cfg.content_dim, cfg.n_candidate_floats
    return [
        {
            "ad_id": f"ad-{seed}-{i}",
            "advertiser_id": f"adv-{i % 37}",
            "content_embedding": [round(x, 4) for x in torch.randn(E, generator=g).tolist()],
            "floats": [round(x, 4) for x in torch.rand(F, generator=g).tolist()],
        }
        for i in range(n)
    ]


def candidates_tensors(cfg: LLaTTEConfig, n: int) -> Candidates:
    return Candidates(
        ad_hash=torch.arange(n) * 7919,
        advertiser_hash=torch.arange(n) % 37,
        content=torch.randn(n, cfg.content_dim),
        has_content=torch.ones(n, dtype=torch.bool),
        floats=torch.rand(n, cfg.n_candidate_floats),
    )


def checkpoint_dir(workdir: Path, seq_len: int) -> tuple[Path, str, str]:
    """The trained demo checkpoint when it has the benchmark's T, else random online weights."""
    note = ""
    if (DEMO_CHECKPOINT / "config.json").is_file():
        ckpt = load_checkpoint(DEMO_CHECKPOINT, stage="online")
        if ckpt.config.max_seq_len == seq_len:
            upstream = ckpt.metadata.get("upstream_model_version") or BENCH_UPSTREAM
            return DEMO_CHECKPOINT, f"trained ({DEMO_CHECKPOINT}, {ckpt.model_version})", upstream
        note = f"; {DEMO_CHECKPOINT} skipped: its T is {ckpt.config.max_seq_len}, not {seq_len}"
    torch.manual_seed(0)
    cfg = online_config(max_seq_len=seq_len)
    path = workdir / "online"
    version = save_checkpoint(
        path, build_model(cfg), cfg, metadata={"upstream_model_version": BENCH_UPSTREAM}
    )
    return path, f"online_config() random weights ({version}){note}", BENCH_UPSTREAM


# ------------------------------------------------------------------------------------------
# 1. model latency in process
# ------------------------------------------------------------------------------------------


def bench_model(path: Path, threads: int) -> dict:
    torch.set_num_threads(threads)
    ckpt = load_checkpoint(path, stage="online")
    model, cfg = ckpt.model, ckpt.config
    now = int(time.time() * 1000)
    T = cfg.max_seq_len
    events = EventBatch.from_records([make_history(cfg, T, now, 0)], T, cfg.content_dim)
    ctx = Context.make([now], ["bench-user"], ["feed"], ["ios"])
    upstream = UpstreamFeature(torch.randn(1, cfg.d_upstream), torch.ones(1, dtype=torch.bool))
    rows = {}
    for n in SIZES:
        cands = candidates_tensors(cfg, n)
        row = {}
        for shared, reps in ((True, 40 if n <= 100 else 15), (False, 5)):
            if not shared and n > 100:
                continue
            score(model, events, ctx, cands, upstream, shared=shared)  # warm
            times = []
            for _ in range(reps):
                start = time.perf_counter()
                score(model, events, ctx, cands, upstream, shared=shared)
                times.append((time.perf_counter() - start) * 1000)
            row["shared" if shared else "naive"] = times
        rows[n] = row
        print(f"  model N={n}: shared p50 {percentile(row['shared'], 50):.1f} ms", flush=True)
    return {"T": T, "rows": rows}


# ------------------------------------------------------------------------------------------
# 2. end to end
# ------------------------------------------------------------------------------------------


class Proc:
    def __init__(self, argv: list[str], env: dict[str, str] | None, log: Path) -> None:
        self.log = log
        with open(log, "wb") as out:
            self.popen = subprocess.Popen(
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                cwd=REPO,
            )  # fmt: skip

    def wait_http(self, url: str, timeout: float = 120) -> None:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.popen.args} exited: {self.log.read_text()[-2000:]}")
            with suppress(OSError), opener.open(url, timeout=1) as r:
                if r.status == 200:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"{url} not ready: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        with suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()


def seed_redis(client: redis.Redis, cfg: LLaTTEConfig, users: int, upstream: str) -> int:
    now = int(time.time() * 1000)
    g = torch.Generator().manual_seed(1)
    for u in range(users):
        user = f"user-{u}"
        pipe = client.pipeline(transaction=False)
        # T events per source: the ranker reads T from each and keeps the newest T overall.
        for r in make_history(cfg, 2 * cfg.max_seq_len, now, seed=u):
            pipe.zadd(history_key(user, source_of(r.action_type)), {r.encode(): r.timestamp_ms})
        record = EmbeddingRecord(
            tuple(torch.randn(cfg.d_upstream, generator=g).tolist()), upstream, now - 60_000,
            now - 61_000, 2 * cfg.max_seq_len,
        )  # fmt: skip
        pipe.hset(
            embedding_key(user),
            mapping={EMBEDDING_FIELD_RECORD: record.encode(), EMBEDDING_FIELD_NEWEST: now},
        )
        pipe.execute()
    return now


def body_bytes(cfg: LLaTTEConfig, user: int, n: int, seed: int) -> bytes:
    body = {
        "user_id": f"user-{user}",
        "context": {"surface": "feed", "device": "ios"},
        "candidates": make_candidates_json(cfg, n, seed),
    }
    return json.dumps(body, separators=(",", ":")).encode()


async def sequential(url: str, bodies: list[bytes], reps: int) -> tuple[list[float], dict]:
    times, last = [], {}
    async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
        for i in range(reps):
            start = time.perf_counter()
            r = await client.post(url, content=bodies[i % len(bodies)], headers=_JSON)
            times.append((time.perf_counter() - start) * 1000)
            r.raise_for_status()
            last = r.json()
    return times, last


_JSON = {"content-type": "application/json"}


async def open_loop(url: str, bodies: list[bytes], rate: float, seconds: float, seed: int):
    """Poisson arrivals at ``rate``/s for ``seconds``; returns latencies (ms) and failures."""
    rng = random.Random(seed)
    latencies: list[float] = []
    failures = 0
    outcomes: dict[str, int] = {}
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(timeout=30, limits=limits, trust_env=False) as client:

        async def one(body: bytes) -> None:
            nonlocal failures
            start = time.perf_counter()
            try:
                r = await client.post(url, content=body, headers=_JSON)
            except httpx.HTTPError:
                failures += 1
                return
            latencies.append((time.perf_counter() - start) * 1000)
            if r.status_code != 200:
                failures += 1
                return
            # Cheap look at the outcome without parsing the whole body.
            head = r.content.rfind(b'"outcome":"')
            outcome = r.content[head + 11 : r.content.find(b'"', head + 11)].decode()
            outcomes[outcome] = outcomes.get(outcome, 0) + 1

        tasks = []
        t0 = time.perf_counter()
        next_at = 0.0
        while next_at < seconds:
            delay = t0 + next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(bodies[rng.randrange(len(bodies))])))
            next_at += rng.expovariate(rate)
        await asyncio.gather(*tasks)
    return latencies, failures, outcomes


async def bench_lookup_cost(port: int, path: Path, upstream: str, users: int) -> dict:
    """The lookup's own cost, without load: the service's Redis read (history always, the
    embedding on or off) plus the embedding decision, alternating, 400 times each."""
    cfg = load_checkpoint(path, stage="online").config
    settings = Settings(redis_url=f"redis://127.0.0.1:{port}/0", redis_budget_ms=1000)
    store = FeatureStore(settings)
    times: dict[str, list[float]] = {"lookup on": [], "lookup off": []}
    now = int(time.time() * 1000)
    try:
        for i in range(800):
            on = i % 2 == 0
            start = time.perf_counter()
            data = await store.fetch(
                f"user-{i % users}",
                history_limit=cfg.max_seq_len,
                read_embedding=on,
                read_history=True,
            )
            decide_embedding(data.embedding, data.outcome, cfg, upstream, now, 10**9, on)
            times["lookup on" if on else "lookup off"].append((time.perf_counter() - start) * 1e3)
    finally:
        await store.aclose()
    return times


def bench_service(path: Path, upstream: str, args: argparse.Namespace, workdir: Path) -> dict:
    cfg = load_checkpoint(path, stage="online").config
    redis_port = free_port()
    procs: list[Proc] = []
    try:
        redis_bin = shutil.which("redis-server") or "redis-server"
        rd = Proc(
            [redis_bin, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(workdir)],
            None, workdir / "redis.log",
        )  # fmt: skip
        procs.append(rd)
        client = redis.Redis(port=redis_port)
        deadline = time.monotonic() + 20
        while True:
            with suppress(redis.RedisError):
                if client.ping():
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("redis-server did not start")
            time.sleep(0.1)
        seed_redis(client, cfg, args.users, upstream)

        lookup_cost = asyncio.run(bench_lookup_cost(redis_port, path, upstream, args.users))
        urls = {}
        for name, lookup in (("lookup on", "true"), ("lookup off", "false")):
            port = free_port()
            env = {
                **os.environ,
                "RANKER_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
                "RANKER_CHECKPOINT_PATH": str(path),
                "RANKER_UPSTREAM_LOOKUP_ENABLED": lookup,
                "RANKER_LOG_LEVEL": "WARNING",
            }
            proc = Proc(
                [sys.executable, "-m", "uvicorn", "ranker_service.main:app", "--port", str(port),
                 "--log-level", "warning", "--no-access-log"],
                env, workdir / f"ranker-{lookup}.log",
            )  # fmt: skip
            procs.append(proc)
            proc.wait_http(f"http://127.0.0.1:{port}/readyz")
            urls[name] = f"http://127.0.0.1:{port}/v1/rank"

        seq = {}
        for n in SIZES:
            bodies = [body_bytes(cfg, u % args.users, n, seed=u) for u in range(8)]
            asyncio.run(sequential(urls["lookup on"], bodies, 5))  # warm
            times, last = asyncio.run(sequential(urls["lookup on"], bodies, args.seq_reps))
            seq[n] = {"times": times, "server_ms": last["timing"], "upstream": last["upstream"]}
            print(f"  http N={n}: p50 {percentile(times, 50):.1f} ms", flush=True)

        bodies = [body_bytes(cfg, u % args.users, args.load_n, seed=100 + u) for u in range(64)]
        load: dict[str, dict] = {
            name: {"lat": [], "rounds": [], "fail": 0, "outcomes": {}} for name in urls
        }
        for r in range(args.rounds):
            order = list(urls) if r % 2 == 0 else list(reversed(urls))
            for name in order:
                lat, fail, outcomes = asyncio.run(
                    open_loop(urls[name], bodies, args.rate, args.round_s, seed=r)
                )
                load[name]["lat"] += lat
                load[name]["rounds"].append(percentile(lat, 99))
                load[name]["fail"] += fail
                for k, v in outcomes.items():
                    load[name]["outcomes"][k] = load[name]["outcomes"].get(k, 0) + v
                print(f"  load round {r} {name}: p99 {percentile(lat, 99):.1f} ms", flush=True)
        return {"sequential": seq, "load": load, "lookup_cost": lookup_cost}
    finally:
        for p in reversed(procs):
            p.stop()


# ------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------


def report(model: dict, service: dict, model_2t: dict, args, checkpoint: str) -> str:
    lines = [f"T = {model['T']}, checkpoint: {checkpoint}", ""]
    lines += [
        "| N | model shared p50 / p99 (ms) | model naive p50 (ms) | naive / shared "
        "| HTTP end-to-end p50 / p99 (ms) | server redis / model (ms) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for n in SIZES:
        row = model["rows"][n]
        sh50, sh99 = percentile(row["shared"], 50), percentile(row["shared"], 99)
        naive = f"{percentile(row['naive'], 50):.1f}" if "naive" in row else "-"
        ratio = f"{percentile(row['naive'], 50) / sh50:.1f}x" if "naive" in row else "-"
        s = service["sequential"][n]
        e50, e99 = percentile(s["times"], 50), percentile(s["times"], 99)
        sm = s["server_ms"]
        lines.append(
            f"| {n} | {sh50:.1f} / {sh99:.1f} | {naive} | {ratio} | {e50:.1f} / {e99:.1f} "
            f"| {sm['redis_ms']:.2f} / {sm['model_ms']:.1f} |"
        )
    lines += ["", f"Intra-op threads: model rows above use {args.threads}; with 2 threads:"]
    lines += [
        "| N | shared p50 / p99 (ms), 2 threads |",
        "|---:|---:|",
    ]
    for n in SIZES:
        t = model_2t["rows"][n]["shared"]
        lines.append(f"| {n} | {percentile(t, 50):.1f} / {percentile(t, 99):.1f} |")
    load = service["load"]
    on, off = load["lookup on"], load["lookup off"]
    lines += [
        "",
        f"Open-loop load: Poisson {args.rate}/s, N = {args.load_n}, {args.rounds} alternating "
        f"rounds of {args.round_s:.0f} s per variant, {args.users} users with 2T stored events.",
        "",
        "| variant | requests | failed | p50 (ms) | p95 (ms) | p99 (ms) | outcomes |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, d in (("lookup on", on), ("lookup off", off)):
        lat = d["lat"]
        lines.append(
            f"| {name} | {len(lat)} | {d['fail']} | {percentile(lat, 50):.1f} | "
            f"{percentile(lat, 95):.1f} | {percentile(lat, 99):.1f} | {d['outcomes']} |"
        )
    ratio = percentile(on["lat"], 99) / percentile(off["lat"], 99)
    pairs = sorted(a / b for a, b in zip(on["rounds"], off["rounds"], strict=True))
    lines += [
        "",
        f"P99 ratio lookup on / off: {ratio:.3f} (target <= 1.05); per round pair: "
        + ", ".join(f"{x:.2f}" for x in pairs)
        + f" (median {pairs[len(pairs) // 2]:.2f})",
    ]
    cost = service["lookup_cost"]
    lines += [
        "Redis read + embedding decision alone, no load (400 each, alternating), p50 / p99 ms: "
        + ", ".join(
            f"{k} {percentile(v, 50):.2f} / {percentile(v, 99):.2f}" for k, v in cost.items()
        )
    ]
    n100 = model["rows"][100]
    speedup = percentile(n100["naive"], 50) / percentile(n100["shared"], 50)
    lines += [f"Shared vs naive at N = 100: {speedup:.1f}x (target >= 20x)"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--seq-len", type=int, default=400, help="T, the history length")
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--seq-reps", type=int, default=30)
    parser.add_argument("--load-n", type=int, default=100)
    parser.add_argument("--rate", type=float, default=8.0, help="requests per second")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--round-s", type=float, default=6.0)
    parser.add_argument("--output", type=Path, default=REPO / "docs/benchmarks/ranker.md")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="ranker-bench-"))
    try:
        path, checkpoint, upstream = checkpoint_dir(workdir, args.seq_len)
        print(f"checkpoint: {checkpoint}", flush=True)
        model_2t = bench_model(path, threads=2)
        model = bench_model(path, threads=args.threads)
        service = bench_service(path, upstream, args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    table = report(model, service, model_2t, args, checkpoint)
    print(table)
    command = "python -m ranker_service.benchmark " + " ".join(sys.argv[1:])
    header = (
        f"Command: `{command.strip()}`  \n"
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"Python {platform.python_version()}; {time.strftime('%Y-%m-%d %H:%M %Z')}\n"
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    notes = ""
    if args.output.is_file():
        # Keep the hand-written notes after the results marker.
        text = args.output.read_text()
        if MARKER in text:
            notes = text[text.index(MARKER) :]
    args.output.write_text(
        f"# Ranker benchmark\n\n{header}\n```\n{table}\n```\n\n{notes or MARKER + chr(10)}"
    )
    print(f"wrote {args.output}")


MARKER = "<!-- notes below are kept when the benchmark rewrites this file -->"

if __name__ == "__main__":
    main()
