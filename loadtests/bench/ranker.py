"""Online ranker benchmark: server CPU by stage, model vs its floor, micro-batching, the peer.

    python -m loadtests.bench.ranker            # configs/online.json, N = 100, ~10 min on 2 cores
    python -m loadtests.bench.ranker --quick    # a tiny config, seconds: the smoke test

Starts a real redis-server, seeds it (per user 400 engagement + 400 impression records with
content vectors, and an upstream embedding; a catalogue of 1,000 ads' content vectors) and
builds a checkpoint of the online config with random weights (latency does not depend on
them). Each request ranks N ads drawn from the catalogue. By default (``--content id``) a
candidate names its content vector by ``content_id``, as production clients do: the ranker
serves repeats from its in-process content cache (warmed before any phase is measured), the
peer reads them from Redis. ``--content inline`` sends every vector in the body instead; the
default run also measures that form's server CPU at one request in flight. Then, one server
at a time (an idle server's threads would take CPU from the one measured): the ranker with
micro-batching, the ranker scoring one request at a time, the micro-batched ranker scoring
with the eager model instead of its recorded graphs (``RANKER_TRACED=false``, the reference
path), the micro-batched ranker answering through the FastAPI route instead of its fast path
(``RANKER_FAST_PATH=false``, server CPU only), the ranker in lower precisions (bf16 where
the CPU multiplies it natively, ``--bf16``; int8, ``RANKER_QUANTIZE=int8``, ``--int8``) and
the LitServe peer (``loadtests.bench.peer_litserve``: plain redis-py, one independent row per
candidate). With ``--isa avx2``, everything runs with torch's CPU kernels capped at AVX2
(``loadtests.bench.common.ISA_CAPS``): an AVX2-only CPU's kernels on a newer core. The
load generator is ``loadtests.bench.http_load`` (keep-alive HTTP/1.1, request bytes built
once); it shares the cores with the server, and its CPU per request is reported.

1. Server CPU per request, by stage, at one request in flight: the process CPU (its
   CPU-time clock, in nanoseconds) and the ranker's ``ranker_stage_cpu_seconds`` counters
   (the rest is HTTP, validation and the framework). ``non-model share`` = CPU outside
   score() / all of it; ``model vs floor`` = score() CPU against the model's FLOPs at the
   fp32 matmul rate measured in this run (one thread, as the ranker runs; the faster of a
   measurement before and one right after this phase).
2. Saturation: closed loop with many clients; throughput with micro-batching vs without.
3. Poisson arrivals at several rates against the ranker and the peer, one after the other:
   P99 of each and their ratio (each round long enough to expect ``--min-requests``, the
   sample a P99 needs); the highest rate with P99 < 50 ms, and P99 at half of it;
   and the ranker's CPU per request over each round, with its non-model share, as load
   changes how often the work outside the model finds its caches warm and how many requests
   a model call scores.
4. An ideal queue at the same rates: each request's time drawn from those the same ranker
   took at one request in flight (1.), queued on its inference threads with no contention
   and no batching (``loadtests.bench.queueing``), against the measured P99s: where the
   ideal P99 already reaches 50 ms, the host's own step times rule the rate out; where the
   measured one sits far above the ideal, the serving path and the shared cores take the
   difference.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis
import torch

from loadtests.bench.common import (
    ISA_CAPS,
    Result,
    cap_isa,
    command_line,
    matmul_rate,
    parallel_matmul_scaling,
    percentile,
)
from loadtests.bench.http_load import HttpError, HttpPool, server_timing
from loadtests.bench.queueing import quantile, simulate
from loadtests.stack.checkpoints import random_checkpoint
from loadtests.stack.servers import LOOPBACK, RedisServer, ServiceProcess, free_port
from ranker_service.settings import Settings
from shared_model.config import LLaTTEConfig, online_config, tiny_config
from shared_model.contract import (
    EMBEDDING_FIELD_NEWEST,
    EMBEDDING_FIELD_RECORD,
    ActionType,
    EmbeddingRecord,
    HistoryRecord,
    content_embedding_key,
    embedding_key,
    history_key,
    source_of,
    stable_hash,
)
from shared_model.flops import scoring_flops
from shared_model.inference import cpu_has_native_bf16

UPSTREAM_VERSION = "bench-upstream-v1"
SLO_MS = 50.0
_JSON = {"content-type": "application/json"}
CATALOGUE = 1000  # ads with a content vector in Redis; each request ranks N of them
CONTENT_MODEL = "bench-content-v1"
DEFAULT_LANES = Settings.model_fields["inference_threads"].default  # the ranker's default
_CLK = os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------------------------
# inputs
# ------------------------------------------------------------------------------------------


def seed_redis(client: redis.Redis, cfg: LLaTTEConfig, users: int, per_source: int) -> None:
    """Per user: ``per_source`` engagement and impression records, and an embedding."""
    now = int(time.time() * 1000)
    g = torch.Generator().manual_seed(1)
    eng = [ActionType.CLICK, ActionType.CONVERSION]
    for u in range(users):
        user, pipe = f"user-{u}", client.pipeline(transaction=False)
        content = torch.randn(2 * per_source, cfg.content_dim, generator=g).tolist()
        for i in range(2 * per_source):
            action = eng[i % 2] if i < per_source else ActionType.IMPRESSION
            r = HistoryRecord(
                now - 60_000 * (2 * per_source - i), action, stable_hash(f"item-{i % 977}"),
                stable_hash("feed"), stable_hash(f"{u}-{i}"), 1.0,
                tuple(content[i]) if cfg.content_dim else None,
            )  # fmt: skip
            pipe.zadd(history_key(user, source_of(action)), {r.encode(): r.timestamp_ms})
        record = EmbeddingRecord(
            tuple(torch.randn(cfg.d_upstream, generator=g).tolist()), UPSTREAM_VERSION,
            now - 60_000, now - 61_000, 2 * per_source,
        )  # fmt: skip
        pipe.hset(
            embedding_key(user),
            mapping={EMBEDDING_FIELD_RECORD: record.encode(), EMBEDDING_FIELD_NEWEST: now},
        )
        pipe.execute()


def seed_content(client: redis.Redis, cfg: LLaTTEConfig, ads: int) -> None:
    """``ads`` content vectors, one EmbeddingRecord per ad (``content_embedding_key``)."""
    now = int(time.time() * 1000)
    g = torch.Generator().manual_seed(4)
    vectors = torch.randn(ads, cfg.content_dim, generator=g).tolist()
    pipe = client.pipeline(transaction=False)
    for a, vector in enumerate(vectors):
        record = EmbeddingRecord(tuple(vector), CONTENT_MODEL, now, now, 0)
        pipe.set(content_embedding_key(f"ad-{a}"), record.encode())
    pipe.execute()


def request_bodies(
    cfg: LLaTTEConfig, users: int, n: int, count: int, content: str = "id", ads: int = CATALOGUE
) -> list[bytes]:
    """``count`` JSON bodies, each N distinct ads of ``ads`` for one user; ``content`` "id"
    names each ad's content vector (``content_id``), "inline" sends it in the body."""
    if n > ads:
        raise ValueError(f"{n} candidates from a catalogue of {ads} ads")
    g = torch.Generator().manual_seed(2)
    bodies = []
    for b in range(count):
        picked = torch.randperm(ads, generator=g)[:n].tolist()
        vectors = torch.randn(n, cfg.content_dim, generator=g)
        floats = torch.rand(n, cfg.n_candidate_floats, generator=g)
        candidates = []
        for i, a in enumerate(picked):
            c: dict = {"ad_id": f"ad-{a}", "advertiser_id": f"adv-{a % 37}"}
            if content == "id":
                c["content_id"] = f"ad-{a}"
            else:
                c["content_embedding"] = [round(x, 4) for x in vectors[i].tolist()]
            c["floats"] = [round(x, 4) for x in floats[i].tolist()]
            candidates.append(c)
        body = {
            "user_id": f"user-{b % users}",
            "context": {"surface": "feed", "device": "ios"},
            "candidates": candidates,
        }
        bodies.append(json.dumps(body, separators=(",", ":")).encode())
    return bodies


# ------------------------------------------------------------------------------------------
# servers and measurements
# ------------------------------------------------------------------------------------------


def start_ranker(
    name: str,
    redis_url: str,
    ckpt: Path,
    batch: int,
    autocast: str = "none",
    threads: int = 1,
    env: dict[str, str] | None = None,
) -> tuple[ServiceProcess, str]:
    port = free_port()
    env = {
        "RANKER_REDIS_URL": redis_url,
        "RANKER_CHECKPOINT_PATH": str(ckpt),
        "RANKER_LOG_LEVEL": "WARNING",
        "RANKER_BATCH_MAX_REQUESTS": str(batch),
        "RANKER_WARMUP_CANDIDATES": "[1,100]",
        "RANKER_AUTOCAST": autocast,
        "RANKER_INFERENCE_THREADS": str(threads),
        **(env or {}),
    }
    proc = ServiceProcess(
        "uvicorn", "ranker_service.main:app", "--host", LOOPBACK, "--port", str(port),
        "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
        env=env, name=name,
    ).start()  # fmt: skip
    url = f"http://{LOOPBACK}:{port}"
    _wait_or_stop(proc, f"{url}/readyz")
    return proc, f"{url}/v1/rank"


def start_peer(redis_url: str, ckpt: Path) -> tuple[ServiceProcess, str]:
    port = free_port()
    proc = ServiceProcess(
        "loadtests.bench.peer_litserve", "--port", str(port), "--checkpoint", str(ckpt),
        "--redis-url", redis_url, name="peer-litserve",
    ).start()  # fmt: skip
    url = f"http://{LOOPBACK}:{port}"
    _wait_or_stop(proc, f"{url}/health")
    return proc, f"{url}/predict"


def warm(url: str, bodies: list[bytes]) -> None:
    """Every body once, so the measured phases find the content cache warm (as in production,
    where the same few thousand ads are candidates in most requests)."""
    with httpx.Client(timeout=120, trust_env=False) as client:
        for b in bodies:
            client.post(url, content=b, headers=_JSON).raise_for_status()


def _wait_or_stop(proc: ServiceProcess, ready_url: str) -> None:
    """Wait for the server to be ready; a server that never gets there is stopped, not left."""
    try:
        proc.wait_ready(ready_url, timeout=300)
    except BaseException:
        proc.stop()
        raise


@contextlib.contextmanager
def serving(proc: ServiceProcess, url: str) -> Iterator[tuple[ServiceProcess, str]]:
    """A started server for the phases measured on it; stopped after them."""
    try:
        yield proc, url
    finally:
        proc.stop()


def _proc_stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_cpu_s(pid: int) -> float:
    """CPU seconds of the process, all its threads (uvicorn serves from the leader, no
    children): its CPU-time clock (clock_gettime, nanoseconds), or, where that clock cannot be
    read, utime + stime from /proc/<pid>/stat, in clock ticks (10 ms: over 40 requests that
    is 0.25 ms a request, too coarse for the non-model share)."""
    try:
        return time.clock_gettime(_process_clock(pid))
    except OSError:
        return sum(int(x) for x in _proc_stat(pid)[11:15]) / _CLK


def _process_clock(pid: int) -> int:
    """Linux's clock id for the CPU time of process ``pid`` (``clock_getcpuclockid``, which
    Python does not wrap): CPUCLOCK_SCHED (2) of the process, encoded as ~pid << 3."""
    return (~pid << 3) | 2


def page_faults(pid: int) -> int:
    """Minor page faults of the process so far (a page mapped in, zero-filled or shared)."""
    return int(_proc_stat(pid)[7])


_CPU_COUNTERS = {
    "stages": 'ranker_stage_cpu_seconds_total{stage="',
    "threads": 'ranker_thread_cpu_seconds_total{thread="',
}


_BATCHES = "ranker_model_batch_size_"  # its _sum (requests) and _count (model calls)


def server_cpu(base_url: str) -> dict[str, dict[str, float]]:
    """The ranker's CPU counters: by stage (``ranker_stage_cpu_seconds``) and by thread role
    (``ranker_thread_cpu_seconds``), seconds so far; and under "batches" the requests scored
    ("sum") and the model calls that scored them ("count") so far."""
    text = httpx.get(f"{base_url}/metrics", trust_env=False).text
    out: dict[str, dict[str, float]] = {key: {} for key in (*_CPU_COUNTERS, "batches")}
    for line in text.splitlines():
        for key, prefix in _CPU_COUNTERS.items():
            if line.startswith(prefix):
                out[key][line.split('"')[1]] = float(line.rsplit(" ", 1)[1])
        if line.startswith((f"{_BATCHES}sum ", f"{_BATCHES}count ")):
            name, value = line.split(" ")
            out["batches"][name.removeprefix(_BATCHES)] = float(value)
    return out


def sequential_cpu(proc: ServiceProcess, url: str, bodies: list[bytes], reps: int) -> dict:
    """Per-request server CPU by stage, one request in flight; and each request's wall time at
    the client ("wall_ms") and its Server-Timing total and model entries ("server_ms",
    "model_ms")."""
    base = url.rsplit("/v1/", 1)[0]
    with httpx.Client(timeout=60, trust_env=False) as client:
        for b in bodies[:5]:  # warm
            client.post(url, content=b, headers=_JSON).raise_for_status()
        counters0, cpu0, faults0 = server_cpu(base), process_cpu_s(proc.pid), page_faults(proc.pid)
        wall, server_ms, model_ms = [], [], []
        for i in range(reps):
            start = time.perf_counter()
            answer = client.post(url, content=bodies[i % len(bodies)], headers=_JSON)
            wall.append((time.perf_counter() - start) * 1000)
            answer.raise_for_status()
            timing = server_timing(answer.headers.get("server-timing", ""))
            server_ms.append(timing["total"])
            model_ms.append(timing["model"])
        # After each scrape, the process clock: both intervals then hold one scrape's part
        # after its counters were read, and the scrape's own CPU cancels out.
        counters1, cpu1, faults1 = server_cpu(base), process_cpu_s(proc.pid), page_faults(proc.pid)
    per = {
        key: {k: (v - counters0[key].get(k, 0.0)) / reps for k, v in counters1[key].items()}
        for key in counters1
    }
    faults = (faults1 - faults0) / reps
    return {
        "total": (cpu1 - cpu0) / reps,
        **per,
        "wall_ms": wall,
        "server_ms": server_ms,
        "model_ms": model_ms,
        "faults": faults,
    }


async def closed_loop(url: str, bodies: list[bytes], clients: int, seconds: float) -> float:
    """Requests per second with ``clients`` back-to-back senders."""
    done = 0
    pool = HttpPool(url, _JSON)
    await pool.open(clients)
    stop = time.perf_counter() + seconds

    async def sender(k: int) -> None:
        nonlocal done
        i = k
        while time.perf_counter() < stop:
            answer = await pool.post(bodies[i % len(bodies)])
            if answer.status != 200:
                raise RuntimeError(f"{url}: HTTP {answer.status}: {answer.body[:200]!r}")
            done += 1
            i += clients

    start = time.perf_counter()
    try:
        await asyncio.gather(*(sender(k) for k in range(clients)))
    finally:
        await pool.aclose()
    return done / (time.perf_counter() - start)


@dataclass
class OpenLoopRun:
    latencies_ms: list[float]
    failures: int
    client_cpu_ms: float  # the load generator's own CPU per request


async def open_loop(
    url: str,
    bodies: list[bytes],
    rate: float,
    seconds: float,
    seed: int,
    server_timing: list[str] | None = None,
) -> OpenLoopRun:
    """Poisson arrivals at ``rate``/s for ``seconds``: latencies, failures, client CPU. Each
    answer's Server-Timing header is appended to ``server_timing`` when given."""
    rng = random.Random(seed)
    latencies: list[float] = []
    failures = 0
    pool = HttpPool(url, _JSON)
    await pool.open(4)

    async def one(body: bytes) -> None:
        nonlocal failures
        start = time.perf_counter()
        try:
            answer = await pool.post(body)
        except HttpError:
            failures += 1
            return
        latencies.append((time.perf_counter() - start) * 1000)
        failures += answer.status != 200
        if server_timing is not None and answer.status == 200:
            server_timing.append(answer.headers.get("server-timing", ""))

    cpu0 = time.process_time()
    tasks, t0, next_at = [], time.perf_counter(), 0.0
    try:
        while next_at < seconds:
            delay = t0 + next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(bodies[rng.randrange(len(bodies))])))
            next_at += rng.expovariate(rate)
        await asyncio.gather(*tasks)
    finally:
        await pool.aclose()
    cpu_ms = 1000 * (time.process_time() - cpu0) / max(1, len(tasks))
    return OpenLoopRun(latencies, failures, cpu_ms)


def stage_table(result: Result, seq: dict, n: int, T: int, label: str) -> tuple[float, float]:
    """Per-stage server CPU at one request in flight -> (total, score) seconds per request."""
    total = seq["total"]
    stages = dict(seq["stages"])
    wall = seq["wall_ms"]
    t = result.table(
        f"Server CPU per request, one in flight (N = {n}, T = {T}{label})",
        ["stage", "CPU ms / request", "share"],
        note="Process CPU from its CPU-time clock; stages from ranker_stage_cpu_seconds; "
        "'other' is HTTP, validation, JSON, the framework and the hand-offs between threads, "
        "split by the thread it ran on (ranker_thread_cpu_seconds: the event loop's CPU less "
        "its stages, redis and respond; the inference threads' less theirs, features and "
        f"score). Wall p50 {percentile(wall, 50):.1f} ms, p99 {percentile(wall, 99):.1f} ms; "
        f"{seq['faults']:.1f} minor page faults per request.",
    )
    for stage in ("redis", "features", "score", "respond"):
        v = stages.get(stage, 0.0)
        t.add(stage, v * 1000, f"{100 * v / total:.1f}%")
    for where, v in other_cpu(total, stages, seq.get("threads", {})):
        t.add(where, v * 1000, f"{100 * v / total:.1f}%")
    t.add("total", total * 1000, "100%")
    return total, stages.get("score", 0.0)


_THREAD_STAGES = {"event_loop": ("redis", "respond"), "inference": ("features", "score")}


def other_cpu(
    total: float, stages: dict[str, float], threads: dict[str, float]
) -> list[tuple[str, float]]:
    """The CPU outside the stages, per request: ('other', all of it) when the server reports no
    CPU by thread; else split by thread, its CPU less its own stages: 'other, event loop',
    'other, inference threads' and 'other, elsewhere' (other threads, and the process's native
    threads, which no role counts)."""
    other = total - sum(stages.values())
    if not all(role in threads for role in _THREAD_STAGES):
        return [("other", other)]
    loop, inference = (
        threads[role] - sum(stages.get(s, 0.0) for s in _THREAD_STAGES[role])
        for role in _THREAD_STAGES
    )
    return [
        ("other, event loop", loop),
        ("other, inference threads", inference),
        ("other, elsewhere", other - loop - inference),
    ]


@dataclass
class RoundCpu:
    """The server's CPU over one Poisson round, per answered request."""

    total_s: float  # the process's CPU
    score_s: float  # score()'s (ranker_stage_cpu_seconds{stage="score"})
    per_call: float  # requests scored per model call


@dataclass
class Lower:
    """A lower-precision ranker's phases (bf16, int8), as the float32 one's."""

    seq: dict  # sequential_cpu: server CPU by stage at one request in flight
    runs: dict[float, OpenLoopRun]  # Poisson rounds by rate
    best: float | None  # the highest rate with P99 < 50 ms
    half: float | None  # the P99 at half that rate, ms


def round_cpu(
    before: tuple[float, dict], after: tuple[float, dict], answered: int
) -> RoundCpu | None:
    """(process CPU, ``server_cpu``) before and after a round -> its CPU per answered request;
    None when no request was answered."""
    if answered <= 0:
        return None
    (cpu0, c0), (cpu1, c1) = before, after

    def delta(key: str, name: str) -> float:
        return c1[key].get(name, 0.0) - c0[key].get(name, 0.0)

    calls = delta("batches", "count")
    return RoundCpu(
        (cpu1 - cpu0) / answered,
        delta("stages", "score") / answered,
        delta("batches", "sum") / calls if calls else 0.0,
    )


def measured_round(
    proc: ServiceProcess, url: str, bodies: list[bytes], rate: float, seconds: float, seed: int
) -> tuple[OpenLoopRun, RoundCpu | None]:
    """``open_loop`` with the server's CPU read around it (one scrape's CPU counts in the
    round's, a few ms over hundreds of requests)."""
    base = url.rsplit("/v1/", 1)[0]
    before = (process_cpu_s(proc.pid), server_cpu(base))
    run = asyncio.run(open_loop(url, bodies, rate, seconds, seed=seed))
    after = (process_cpu_s(proc.pid), server_cpu(base))
    return run, round_cpu(before, after, len(run.latencies_ms))


def non_model_pct(total: float, score: float) -> float:
    """Server CPU outside score() as a percentage of the request's server CPU."""
    return 100 * (total - score) / total


def highest_held(p99_by_rate: Mapping[float, float]) -> float | None:
    """The highest rate at which it and every lower rate had a P99 under the SLO (a lower rate
    that missed is not outweighed by a lucky higher one); None when the lowest already missed."""
    best = None
    for rate in sorted(p99_by_rate):
        if p99_by_rate[rate] >= SLO_MS:
            break
        best = rate
    return best


def sustained_rate(runs: dict[float, OpenLoopRun]) -> float | None:
    """``highest_held`` over measured rounds; a round with a failure misses."""
    return highest_held(
        {
            rate: math.inf if run.failures else percentile(run.latencies_ms, 99)
            for rate, run in runs.items()
        }
    )


IDEAL_REQUESTS = 100_000  # simulated arrivals per rate: a P99 from a thousand tail requests


def ideal_p99(samples_ms: list[float], rate: float, servers: int) -> float:
    """The P99 (ms) of an ideal queue: Poisson arrivals at ``rate`` on ``servers`` inference
    threads, each request taking one of ``samples_ms`` drawn at random, first come first
    served (``loadtests.bench.queueing``). No batching, no contention, no HTTP."""
    service = [x / 1000 for x in samples_ms]
    return 1000 * quantile(simulate(rate, service, IDEAL_REQUESTS, seed=0, servers=servers), 0.99)


def round_seconds(rate: float, round_s: float, min_requests: int) -> float:
    """How long a Poisson round at ``rate`` runs: ``round_s``, or long enough to expect
    ``min_requests`` arrivals. A P99 needs them: of 60 requests (30 s at 2 req/s), the
    nearest-rank P99 is the slowest one."""
    return max(round_s, min_requests / rate)


def best_rate(
    runs: dict[float, OpenLoopRun], url: str, bodies: list[bytes], seconds: Callable[[float], float]
) -> tuple[float | None, float | None]:
    """``sustained_rate`` and the P99 of a new run at half that rate (``seconds(rate)`` long)."""
    best = sustained_rate(runs)
    if best is None:
        return None, None
    run = asyncio.run(open_loop(url, bodies, best / 2, seconds(best / 2), seed=99))
    return best, percentile(run.latencies_ms, 99)


def rate_line(label: str, best: float | None, half: float | None, rates: list[float]) -> str:
    if best is None:
        return f"highest Poisson rate with P99 < {SLO_MS:.0f} ms{label}: none of {rates}"
    return (
        f"highest Poisson rate with P99 < {SLO_MS:.0f} ms{label}: {best:g} req/s "
        f"(P99 at {best / 2:g} req/s: {half:.1f} ms)"
    )


def ideal_line(
    name: str, server: Mapping[float, float], model: Mapping[float, float] | None, threads: int
) -> str:
    """The summary line of the ideal queue's highest rate under the SLO."""

    def held(p99s: Mapping[float, float]) -> str:
        best = highest_held(p99s)
        return f"none of {sorted(p99s)}" if best is None else f"{best:g} req/s"

    line = (
        f"highest Poisson rate with P99 < {SLO_MS:.0f} ms on an ideal queue, {name} "
        f"({threads} threads, this run's lone-request server times): {held(server)}"
    )
    return line + (f"; model calls alone: {held(model)}" if model is not None else "")


# ------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny config, short phases")
    parser.add_argument("--candidates", type=int, default=100, help="N per request")
    parser.add_argument(
        "--content",
        choices=["id", "inline"],
        default="id",
        help="candidates name their content vectors by content_id (the ranker's content cache "
        "serves them; the default, and the production shape) or carry them inline",
    )
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--rates", default="2,5,10,15,20,25,30", help="Poisson req/s")
    parser.add_argument("--round-s", type=float, default=12.0, help="seconds per rate")
    parser.add_argument(
        "--min-requests", type=int, default=200,
        help="a rate's round runs long enough to expect this many requests (its P99's sample)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="result JSON path")
    parser.add_argument(
        "--bf16", choices=["auto", "yes", "no"], default="auto",
        help="also measure a bf16 ranker (RANKER_AUTOCAST=bf16); auto: when the CPU "
        "multiplies bf16 natively (AVX512-BF16/AMX), where it is faster than float32",
    )  # fmt: skip
    parser.add_argument(
        "--int8", choices=["yes", "no"], default="yes",
        help="also measure an int8 ranker (RANKER_QUANTIZE=int8)",
    )  # fmt: skip
    parser.add_argument(
        "--isa", choices=sorted(ISA_CAPS), default=None,
        help="cap the instruction set of torch's CPU kernels (ATen, oneDNN, MKL, FBGEMM) at "
        "this one, in this process and the servers it starts: an AVX2-only CPU measured on "
        "a newer one",
    )  # fmt: skip
    parser.add_argument(
        "--inference-threads", type=int, default=DEFAULT_LANES,
        help="RANKER_INFERENCE_THREADS of the micro-batched rankers (default: the ranker's, "
        f"{DEFAULT_LANES}; the one-at-a-time ranker keeps 1; with more, the saturation table "
        "also shows micro-batching on one thread)",
    )  # fmt: skip
    parser.add_argument(
        "--torch-threads", type=int, default=1,
        help="RANKER_TORCH_THREADS (intra-op threads per model call) of the micro-batched "
        "rankers; the one-at-a-time ranker keeps 1",
    )  # fmt: skip
    parser.add_argument(
        "--tag", default="", help="appended to the result's name (e.g. the machine: xeon-amx)"
    )
    args = parser.parse_args(argv)
    cap_isa(args.isa, "loadtests.bench.ranker", argv if argv is not None else sys.argv[1:])
    threads = args.inference_threads
    # auto: where the CPU multiplies bf16 natively, which a capped ISA does not
    with_bf16 = args.bf16 == "yes" or (
        args.bf16 == "auto" and cpu_has_native_bf16() and not args.isa
    )
    torch.set_num_threads(1)  # the floor at the ranker's thread count

    cfg = tiny_config("online") if args.quick else online_config()
    n, users = (10, 4) if args.quick else (args.candidates, args.users)
    rates = [2.0, 5.0] if args.quick else [float(r) for r in args.rates.split(",")]
    round_s = 1.0 if args.quick else args.round_s
    min_requests = 4 if args.quick else args.min_requests

    def seconds(rate: float) -> float:
        return round_seconds(rate, round_s, min_requests)

    reps, sat_s, sat_clients = (10, 1.0, 4) if args.quick else (200, 15.0, 8)
    probe_s = 0.25 if args.quick else 1.0  # each measurement of the matmul rates
    per_source = cfg.max_seq_len

    tag = f"-{args.tag}" if args.tag else ""
    result = Result(
        ("ranker" if threads == DEFAULT_LANES else f"ranker-{threads}-thread{'s' * (threads > 1)}")
        + tag,
        "Online ranker: server CPU, model floor, micro-batching, and a LitServe peer"
        + f" ({threads} inference thread{'s' * (threads > 1)}"
        + (f", {args.torch_threads} intra-op threads each" if args.torch_threads > 1 else "")
        + ")"
        + (f", {args.tag}" if args.tag else ""),
        command_line("loadtests.bench.ranker", argv if argv is not None else sys.argv[1:]),
        description=(__doc__ or "").split("\n\n", 2)[2].strip(),
    )
    rate_flops = matmul_rate(seconds=probe_s)
    two_thread_scaling = parallel_matmul_scaling(2, seconds=probe_s)
    rate_bf16 = matmul_rate(dtype="bfloat16", seconds=probe_s) if with_bf16 else None
    with tempfile.TemporaryDirectory(prefix="bench-ranker-") as tmp, RedisServer() as rd:
        ckpt = Path(tmp) / "online"
        version = random_checkpoint(ckpt, cfg, seed=0, upstream_model_version=UPSTREAM_VERSION)
        seed_redis(rd.client(), cfg, users, per_source)
        ads = max(CATALOGUE, n)
        seed_content(rd.client(), cfg, ads)
        bodies = request_bodies(cfg, users, n, 32, args.content, ads)
        inline = request_bodies(cfg, users, n, 32, "inline", ads) if args.content == "id" else None
        ranker_env = {"RANKER_TORCH_THREADS": str(args.torch_threads)}

        def ranker(name: str, batch: int, lanes: int, autocast: str = "none", **extra: str):
            # one-at-a-time: the 1-thread default
            env = {**(ranker_env if batch > 1 else {}), **extra}
            proc, url = start_ranker(name, rd.url, ckpt, batch, autocast, lanes, env)
            try:
                warm(url, bodies)
            except BaseException:
                proc.stop()
                raise
            return proc, url

        # Each server runs alone, only for its own phases: an idle server's threads would
        # otherwise take CPU from the one being measured.
        # 1. the micro-batched ranker: CPU by stage at one request in flight, saturation,
        # Poisson rates
        with serving(*ranker("ranker-batched", 8, threads)) as (proc, url):
            seq = sequential_cpu(proc, url, bodies, reps)
            seq_inline = sequential_cpu(proc, url, inline, reps) if inline else None
            # The floor's rate again, right after the phase it is compared with: the faster of
            # the two measurements (load can only slow it) keeps the ratio from flattering.
            rate_flops = max(rate_flops, matmul_rate(seconds=probe_s))
            sat = {"batched": asyncio.run(closed_loop(url, bodies, sat_clients, sat_s))}
            measured = {
                rate: measured_round(proc, url, bodies, rate, seconds(rate), seed=i)
                for i, rate in enumerate(rates)
            }
            ours = {rate: run for rate, (run, _) in measured.items()}
            loaded = {rate: cpu for rate, (_, cpu) in measured.items() if cpu is not None}
            best, half = best_rate(ours, url, bodies, seconds)
        # 1b. the same ranker answering through the FastAPI route (RANKER_FAST_PATH=false, the
        # reference): what the fast path saves outside the model
        with serving(*ranker("ranker-route", 8, threads, RANKER_FAST_PATH="false")) as (p, u):
            seq_route = sequential_cpu(p, u, bodies, reps)
        # 2. one request at a time (and micro-batching on one thread, when the above had more)
        with serving(*ranker("ranker-single", 1, 1)) as (_, url):
            sat["single"] = asyncio.run(closed_loop(url, bodies, sat_clients, sat_s))
        if threads > 1:
            with serving(*ranker("ranker-batched-1", 8, 1)) as (_, url):
                sat["batched 1 thread"] = asyncio.run(closed_loop(url, bodies, sat_clients, sat_s))

        # 3. the same micro-batched ranker scoring eagerly (RANKER_TRACED=false): the reference
        # path, and what the recorded graphs gain
        def variant(name: str, autocast: str = "none", **extra: str):
            """A micro-batched ranker's server CPU, saturation and Poisson rates."""
            with serving(*ranker(name, 8, threads, autocast, **extra)) as (proc, url):
                seq = sequential_cpu(proc, url, bodies, reps)
                saturation = asyncio.run(closed_loop(url, bodies, sat_clients, sat_s))
                runs = {
                    rate: asyncio.run(open_loop(url, bodies, rate, seconds(rate), seed=i))
                    for i, rate in enumerate(rates)
                }
                return seq, saturation, runs, *best_rate(runs, url, bodies, seconds)

        seq_eager, sat["batched eager"], ours_eager, best_eager, half_eager = variant(
            "ranker-eager", RANKER_TRACED="false"
        )
        # 4. lower precisions: bf16 (its graphs recorded in bf16 and replayed as recorded)
        # and int8 (the Linear layers quantized, its graphs recorded from the int8 model)
        precisions: dict[str, tuple[str, dict[str, str]]] = {}
        if with_bf16:
            precisions["bf16"] = ("bf16", {})
        if args.int8 == "yes":
            precisions["int8"] = ("none", {"RANKER_QUANTIZE": "int8"})
        lower: dict[str, Lower] = {}
        for name, (autocast, extra) in precisions.items():
            seq_p, sat[f"batched {name}"], runs_p, best_p, half_p = variant(
                f"ranker-{name}", autocast, **extra
            )
            with serving(*ranker(f"ranker-single-{name}", 1, 1, autocast, **extra)) as (_, url):
                sat[f"single {name}"] = asyncio.run(closed_loop(url, bodies, sat_clients, sat_s))
            lower[name] = Lower(seq_p, runs_p, best_p, half_p)
        # 5. the peer, rate by rate until it no longer keeps up
        theirs: dict[float, OpenLoopRun] = {}
        peer_sustains: list[float] = []
        with serving(*start_peer(rd.url, ckpt)) as (_, url):
            for i, rate in enumerate(rates):
                run = theirs[rate] = asyncio.run(open_loop(url, bodies, rate, round_s, seed=i))
                # Past saturation the queue only grows (the median waits a good part of the
                # round): higher rates would not be sustained either.
                if run.failures or percentile(run.latencies_ms, 50) >= 1000 * round_s / 4:
                    break
                peer_sustains.append(rate)

    # ---- report ----------------------------------------------------------------------------
    result.data.update(
        config=cfg.__dict__ if hasattr(cfg, "__dict__") else str(cfg),
        checkpoint=version,
        candidates=n,
        history_per_source=per_source,
        matmul_flops_per_s=rate_flops,
        inference_threads=threads,
        content=args.content,
        catalogue_ads=ads,
        torch_threads=args.torch_threads,
        two_thread_matmul_scaling=two_thread_scaling,
    )
    floor_s = scoring_flops(cfg, n, shared=True) / rate_flops
    total, score_s = stage_table(result, seq, n, cfg.max_seq_len, f", content {args.content}")
    if seq_inline is not None:
        total_inline, score_inline = stage_table(
            result, seq_inline, n, cfg.max_seq_len, ", content inline"
        )
    total_route, score_route = stage_table(
        result, seq_route, n, cfg.max_seq_len, f", content {args.content}, FastAPI route"
    )
    total_eager, score_eager = stage_table(
        result, seq_eager, n, cfg.max_seq_len, f", content {args.content}, eager"
    )
    cpu_lower = {
        name: stage_table(result, low.seq, n, cfg.max_seq_len, f", content {args.content}, {name}")
        for name, low in lower.items()
    }
    if with_bf16:
        result.data["matmul_bf16_flops_per_s"] = rate_bf16
    t2 = result.table(
        "Saturation (closed loop)", ["server", "clients", "req/s"],
        note="The same ranker, micro-batching on (batch_max_requests 8) and off (1); "
        f"micro-batched rankers on {threads} inference thread(s) unless the row says one.",
    )  # fmt: skip
    t2.add("one at a time", sat_clients, sat["single"])
    t2.add("micro-batched", sat_clients, sat["batched"])
    t2.add("micro-batched, eager", sat_clients, sat["batched eager"])
    if threads > 1:
        t2.add("micro-batched, 1 thread", sat_clients, sat["batched 1 thread"])
    for name in lower:
        t2.add(f"one at a time, {name}", sat_clients, sat[f"single {name}"])
        t2.add(f"micro-batched, {name}", sat_clients, sat[f"batched {name}"])
    t3 = result.table(
        f"Poisson arrivals, {round_s:.0f} s per rate or long enough to expect {min_requests} "
        "requests: this ranker vs the LitServe peer",
        ["req/s", "ours p50 ms", "ours p99 ms", "ours failed"]
        + ["eager p50 ms", "eager p99 ms", "eager failed"]
        + [f"{name} {col}" for name in lower for col in ("p50 ms", "p99 ms", "failed")]
        + ["peer p50 ms", "peer p99 ms", "peer failed", "ours / peer p99"],
        note="Each of this ranker's rounds ran "
        + ", ".join(f"{seconds(r):.0f} s at {r:g} req/s" for r in rates)
        + " (long enough to expect the requests a P99 needs); the peer's ran "
        f"{round_s:.0f} s each: past its saturation a longer round only grows its queue. "
        "The peer: LitServe dynamic batching (max 8, 5 ms), plain redis-py WITHSCORES, "
        "one independent row per candidate; '-' where a lower rate already overloaded it "
        "(its median waited a quarter of the round or more). The load generator "
        "(loadtests.bench.http_load, on the same cores) spent "
        f"{statistics.mean(r.client_cpu_ms for r in ours.values()):.2f} ms CPU per request.",
    )  # fmt: skip
    ratios = []
    for rate in rates:
        run = ours[rate]
        p99 = percentile(run.latencies_ms, 99)
        row = [rate, percentile(run.latencies_ms, 50), p99, run.failures]
        e = ours_eager[rate]
        row += [percentile(e.latencies_ms, 50), percentile(e.latencies_ms, 99), e.failures]
        for low in lower.values():
            h = low.runs[rate]
            row += [percentile(h.latencies_ms, 50), percentile(h.latencies_ms, 99), h.failures]
        if rate in theirs:
            peer = theirs[rate]
            pp99 = percentile(peer.latencies_ms, 99)
            row += [percentile(peer.latencies_ms, 50), pp99, peer.failures, p99 / pp99]
            if rate in peer_sustains:
                ratios.append(p99 / pp99)
        else:
            row += [None, None, None, None]
        t3.add(*row)
    t4 = result.table(
        f"Server CPU per request under Poisson load (N = {n}, T = {cfg.max_seq_len}, "
        f"content {args.content})",
        ["req/s", "CPU ms / request", "score ms / request", "outside score ms / request",
         "non-model share", "requests per model call"],
        note="The micro-batched float32 ranker over each round of the Poisson table above: "
        "its process CPU (CPU-time clock) and score() CPU (ranker_stage_cpu_seconds) between "
        "the round's start and end, per answered request; requests per model call from "
        "ranker_model_batch_size. The first table measures one request in flight, back to back.",
    )  # fmt: skip
    for rate, c in loaded.items():
        t4.add(rate, 1e3 * c.total_s, 1e3 * c.score_s, 1e3 * (c.total_s - c.score_s),
               f"{non_model_pct(c.total_s, c.score_s):.1f}%", c.per_call)  # fmt: skip
    # What the host's lone-request times allow: the same rates on an ideal queue
    lone = {"float32": seq, **{name: low.seq for name, low in lower.items()}}
    t5 = result.table(
        f"An ideal queue on {threads} inference threads with this run's lone-request times: "
        "P99 ms at the same rates",
        ["req/s"]
        + [f"{name} {col}" for name in lone for col in ("measured", "ideal, server time")]
        + ["float32 ideal, model call"],
        note=f"'ideal': what {threads} inference threads would answer at these Poisson rates "
        "if every request took one of the times measured at one request in flight (each "
        "drawn at random from them; python -m loadtests.bench.queueing): first come first "
        f"served, no batching, no contention between the threads, {IDEAL_REQUESTS:,} "
        "simulated requests per rate. 'server time': each lone request's Server-Timing "
        "total (its Redis read, features, model call and response, no HTTP); 'model call': "
        "its model entry alone, a server with no work around the model. 'measured': the P99 "
        "of the Poisson table above. Where the ideal P99 reaches 50 ms, the host's lone-request "
        "times alone miss the SLO at that rate.",
    )  # fmt: skip
    ideal = {
        name: {r: ideal_p99(q["server_ms"], r, threads) for r in rates} for name, q in lone.items()
    }
    ideal_model = {r: ideal_p99(seq["model_ms"], r, threads) for r in rates}
    measured_runs = {"float32": ours, **{name: low.runs for name, low in lower.items()}}
    for rate in rates:
        row: list = [rate]
        for name in lone:
            row += [percentile(measured_runs[name][rate].latencies_ms, 99), ideal[name][rate]]
        t5.add(*row, ideal_model[rate])
    result.data["lone_request_ms"] = {
        name: {key: q[key] for key in ("wall_ms", "server_ms", "model_ms")}
        for name, q in lone.items()
    }
    result.data["poisson"] = {
        "ours": {str(r): ours[r].latencies_ms for r in rates},
        "ours_eager": {str(r): ours_eager[r].latencies_ms for r in ours_eager},
        **{
            f"ours_{name}": {str(r): run.latencies_ms for r, run in low.runs.items()}
            for name, low in lower.items()
        },
        "peer": {str(r): theirs[r].latencies_ms for r in theirs},
    }
    # score() CPU is the inference thread's own: with more intra-op threads, the OpenMP
    # workers' CPU (their spin-waits included) lands in 'other' and the two ratios mislead.
    cpu_caveat = (
        ""
        if args.torch_threads == 1
        else f" (not comparable: {args.torch_threads} intra-op threads, whose OpenMP workers' "
        "CPU counts as 'other')"
    )
    result.summary += [
        f"non-model share: {non_model_pct(total, score_s):.1f}%"
        + (
            f" (content by id; inline: {non_model_pct(total_inline, score_inline):.1f}%)"
            if seq_inline is not None
            else f" (content {args.content})"
        )
        + cpu_caveat,
        f"model vs floor: {score_s / floor_s:.2f}x" + cpu_caveat,
        f"batched saturation gain: {sat['batched'] / sat['single']:.2f}x"
        + (
            f" ({threads} inference threads; on one: "
            f"{sat['batched 1 thread'] / sat['single']:.2f}x)"
            if threads > 1
            else ""
        ),
        rate_line("", best, half, rates),
        ideal_line("float32", ideal["float32"], ideal_model, threads),
        "non-model share under Poisson load: "
        + ", ".join(
            f"{non_model_pct(c.total_s, c.score_s):.1f}% at {rate:g} req/s"
            for rate, c in loaded.items()
        ),
        "ours / peer P99 at the rates the peer sustains: "
        + (
            ", ".join(f"{x:.3f}x" for x in ratios)
            if ratios
            else f"none ({min(rates):g} req/s already overloads it; ratio there "
            f"{t3.rows[0][-1]:.3f}x)"
        ),
    ]
    result.summary.append(
        f"fast path vs the FastAPI route: {1e3 * (total - score_s):.2f} vs "
        f"{1e3 * (total_route - score_route):.2f} ms server CPU outside score() per request "
        f"(non-model share {non_model_pct(total, score_s):.1f}% vs "
        f"{non_model_pct(total_route, score_route):.1f}%)"
    )
    result.summary += [
        f"recorded graphs vs eager: model step {1e3 * score_s:.1f} vs {1e3 * score_eager:.1f} ms "
        f"({score_eager / score_s:.2f}x), non-model share "
        f"{non_model_pct(total_eager, score_eager):.1f}% eager, saturation "
        f"{sat['batched']:.1f} vs {sat['batched eager']:.1f} req/s "
        f"({sat['batched'] / sat['batched eager']:.2f}x)",
        rate_line(", eager", best_eager, half_eager, rates),
    ]
    result.summary.append(
        f"fp32 matmuls from 2 threads at once: {two_thread_scaling:.2f}x the throughput of one "
        "(the parallel compute this machine gives the model)"
    )
    if "bf16" in lower:
        (total_bf16, score_bf16), low = cpu_lower["bf16"], lower["bf16"]
        floor_bf16 = scoring_flops(cfg, n, shared=True) / rate_bf16
        result.summary += [
            f"bf16: non-model share {non_model_pct(total_bf16, score_bf16):.1f}%, "
            f"model step {1e3 * score_bf16:.1f} ms vs {1e3 * score_s:.1f} ms float32 "
            f"({score_s / score_bf16:.2f}x), {score_bf16 / floor_bf16:.2f}x its floor at the "
            f"bf16 matmul rate ({rate_bf16 / 1e9:.0f} vs {rate_flops / 1e9:.0f} GFLOP/s fp32)",
            f"bf16 saturation: {sat['batched bf16']:.1f} req/s "
            f"({sat['batched bf16'] / sat['single']:.2f}x one-at-a-time float32)",
            f"bf16 batched saturation gain: {sat['batched bf16'] / sat['single bf16']:.2f}x "
            "(micro-batched vs one at a time, both bf16)",
            rate_line(", bf16", low.best, low.half, rates),
            ideal_line("bf16", ideal["bf16"], None, threads),
        ]
    if "int8" in lower:
        (total_int8, score_int8), low = cpu_lower["int8"], lower["int8"]
        result.summary += [
            f"int8: non-model share {non_model_pct(total_int8, score_int8):.1f}%, "
            f"model step {1e3 * score_int8:.1f} ms vs {1e3 * score_s:.1f} ms float32 "
            f"({score_s / score_int8:.2f}x), {score_int8 / floor_s:.2f}x the float32 floor",
            f"int8 saturation: {sat['batched int8']:.1f} req/s "
            f"({sat['batched int8'] / sat['single']:.2f}x one-at-a-time float32)",
            f"int8 batched saturation gain: {sat['batched int8'] / sat['single int8']:.2f}x "
            "(micro-batched vs one at a time, both int8)",
            rate_line(", int8", low.best, low.half, rates),
            ideal_line("int8", ideal["int8"], None, threads),
        ]
    result.write(args.out)


if __name__ == "__main__":
    main()
