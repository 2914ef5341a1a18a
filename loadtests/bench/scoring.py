"""The online model step against its FLOPs floor, and several requests scored together.

``python -m loadtests.bench.scoring`` measures, on this machine and in one run, for the
configured online model (``shared_model/configs/online.json``) at N candidates and a full
history of T = max_seq_len events, at each intra-op thread count asked for:

* the fp32 rate of a 1024^3 matmul (as ``loadtests.bench.common.matmul_rate``, but timed in the
  same interleaved rounds as the model step) and the floor of the model step: its counted FLOPs
  (``shared_model.flops.scoring_flops``, shared sequence) / that rate;
* ``score()`` (absorbed MLA, the serving path) and the same in the SDPA form, as time per
  request and as a multiple of the floor, and the absorbed step replayed as a recorded
  TorchScript graph (``shared_model.traced``, what the ranker runs in float32), frozen and
  optimised for inference and as recorded, and the optimised graph of the model with the
  candidates' read of the prefix materialised instead of through the flash kernel;
* ``score_many()`` over G requests against G calls of ``score()``: time per request and ratio,
  eager and recorded;
* where the recorded step's time goes against its floor (one thread): the matrix products
  the graph ran (``matrix_products``, from the profiler's record), replayed alone in its
  order on operands of their own, and the step's fixed cost, the graph for one candidate and
  a one-event history;
* two Python threads scoring side by side on one intra-op thread each (the ranker with
  ``RANKER_INFERENCE_THREADS=2``) against one, eager and recorded: what the GIL costs;
* on a CPU that multiplies bf16 natively (AVX512-BF16/AMX; ``--bf16 yes`` forces it): the same
  step in float32, under bf16 autocast on float32 weights (the reference, which casts every
  Linear weight on every call), with the weights cast once
  (``shared_model.inference.cast_weights_for_autocast``, as the ranker loads a bf16 model)
  and as that model's recorded bf16 graph (what a bf16 ranker replays), one request and G
  together, against the floor at the bf16 matmul rate;
* int8 (``--int8 no`` skips it): the model with its eligible Linear layers in dynamic int8
  (``shared_model.quantize``, as the ranker loads it with ``RANKER_QUANTIZE=int8``), eager
  and as its recorded graph, one request and G together, against the float32 recorded graph
  and the float32 floor;
* with ``--isa avx2``: all of it with torch's CPU kernels capped at AVX2
  (``loadtests.bench.common.ISA_CAPS``), an AVX2-only CPU measured on a newer one;
* with ``--baseline REV``: before/after, the same ``score()`` step timed with the model package
  of git revision REV (``git archive``) and with this tree's, in alternating subprocesses.

Ends with ``model vs floor: Yx`` of the recorded graph at the first thread count (the
ranker's, 1 by default), the eager step's beside it. Timings
are the median of per-round minima, rounds interleaved between the variants, so a variant is
never favoured by a quiet moment of a shared machine. Asserts nothing.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import math
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from loadtests.bench.common import (
    ISA_CAPS,
    REPO_ROOT,
    Result,
    cap_isa,
    command_line,
    matmul_rate,
)
from shared_model.config import online_config
from shared_model.features import Candidates, Context, EventBatch, UpstreamFeature
from shared_model.flops import scoring_flops
from shared_model.inference import score
from shared_model.modules.mla import MultiHeadLatentAttention
from shared_model.ranker import RankerModel

if TYPE_CHECKING:
    from shared_model.traced import TracedScorer

NOW_MS = 1_750_000_000_000
PAIRS = 5  # before/after subprocess pairs
BATCH_PAIR = 8  # requests in the before/after's recorded score_many
MATMUL_N = 1024  # the floor's fp32 matmul: n x n x n, about as long as the model step
RECORDED_F32 = "float32, recorded graph"  # frozen and optimised, as a float32 ranker scores
RECORDED_BF16 = "bf16, recorded graph"  # the weights cast at load, as a bf16 ranker scores
RECORDED_INT8 = "int8, recorded graph"  # the Linear layers quantized, as an int8 ranker scores
RECORDED_INT8_ALL = "int8 with DHEN and heads, recorded graph"  # every eligible Linear
Request = tuple[EventBatch, Context, Candidates, UpstreamFeature]


def _request(cfg, n_candidates: int, length: int) -> Request:
    T, E = cfg.max_seq_len, cfg.content_dim
    ev = EventBatch.empty(1, T, E)
    ev.timestamps_ms[:] = NOW_MS - torch.randint(0, 10**9, (1, T)).sort(1, True).values
    ev.action_type[:] = torch.randint(1, 6, (1, T))
    ev.item_hash[:] = torch.randint(0, 2**62, (1, T))
    ev.surface_hash[:] = torch.randint(0, 2**62, (1, T))
    ev.value[:] = torch.rand(1, T)
    ev.content[:] = torch.randn(1, T, E)
    ev.valid[:, T - length :] = True
    ids = torch.randint(0, 2**62, (5, max(n_candidates, 1)))
    cands = Candidates(
        ids[0, :n_candidates],
        ids[1, :n_candidates],
        torch.randn(n_candidates, E),
        torch.ones(n_candidates, dtype=torch.bool),
        torch.rand(n_candidates, cfg.n_candidate_floats) * 10,
    )
    ctx = Context(torch.full((1,), NOW_MS), ids[2, :1], ids[3, :1], ids[4, :1])
    up = UpstreamFeature(torch.randn(1, cfg.d_upstream), torch.ones(1, dtype=torch.bool))
    return ev, ctx, cands, up


def interleaved(
    variants: dict[str, Callable[[], object]], rounds: int, reps: int
) -> dict[str, float]:
    """Seconds per call of each variant: the median over rounds of the round's minimum."""
    for fn in variants.values():
        fn()  # warm-up: caches, folded weights, allocator
    mins: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            best = float("inf")
            for _ in range(reps):
                start = time.perf_counter()
                fn()
                best = min(best, time.perf_counter() - start)
            mins[name].append(best)
    return {name: statistics.median(v) for name, v in mins.items()}


def compile_table(result: Result, model: RankerModel, request: Request, threads: int, rounds: int):
    """torch.compile of decode_queries (static shapes): compile time and step time vs eager."""
    torch.set_num_threads(threads)
    ev, ctx, cands, _ = request
    seq = model.sequence
    with torch.inference_mode():
        cache = seq.encode_history(ev, ctx, "absorbed", padded=False)
        compiled = torch.compile(seq.decode_queries, dynamic=False)
        start = time.perf_counter()
        out = compiled(cache, ctx, cands)
        compile_s = time.perf_counter() - start
        diff = (out - seq.decode_queries(cache, ctx, cands)).abs().max().item()
        t = interleaved(
            {
                "eager": lambda: seq.decode_queries(cache, ctx, cands),
                "compiled": lambda: compiled(cache, ctx, cands),
            },
            rounds,
            5,
        )
    table = result.table(
        "torch.compile of the decode step (decode_queries, N candidates)",
        ["threads", "compile s", "eager ms", "compiled ms", "speed-up", "max |diff|"],
        note="Static shapes: another N or history length compiles again.",
    )
    speed_up = t["eager"] / t["compiled"]
    table.add(threads, compile_s, t["eager"] * 1e3, t["compiled"] * 1e3, speed_up, diff)


def side_by_side_table(
    result: Result, model: RankerModel, traced: TracedScorer, request: Request, rounds: int
) -> str:
    """Two Python threads each scoring on one intra-op thread (RANKER_INFERENCE_THREADS=2)
    against one: calls per second, eager and recorded, interleaved by round."""
    torch.set_num_threads(1)
    variants = {
        "eager": lambda: score(model, *request),
        "recorded": lambda: traced.score(*request),
    }
    calls = 8

    def rate(fn: Callable[[], object], threads: int) -> float:
        def loop() -> None:
            torch.set_num_threads(1)
            for _ in range(calls):
                fn()

        workers = [threading.Thread(target=loop) for _ in range(threads)]
        start = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return threads * calls / (time.perf_counter() - start)

    best: dict[tuple[str, int], float] = {}
    for _ in range(rounds):
        for name, fn in variants.items():
            for threads in (1, 2):
                best[name, threads] = max(best.get((name, threads), 0.0), rate(fn, threads))
    table = result.table(
        "Two model calls side by side: one request each, one intra-op thread each",
        ["path", "1 thread calls/s", "2 threads calls/s", "2 / 1"],
        note="Each thread scores N candidates for its own request (the ranker with "
        "RANKER_INFERENCE_THREADS=2). An eager step takes the GIL back at each of its "
        "few hundred ops; a recorded graph releases it for the whole step. Best round of "
        f"{rounds}, {calls} calls per thread.",
    )
    for name in variants:
        one, two = best[name, 1], best[name, 2]
        table.add(name, one, two, two / one)
    return (
        "two inference threads: "
        + ", ".join(f"{name} {best[name, 2] / best[name, 1]:.2f}x one" for name in variants)
        + f"; recorded vs eager with two: {best['recorded', 2] / best['eager', 2]:.2f}x"
    )


def _child_step(n_candidates: int, threads: int, rounds: int) -> None:
    """Print the model package on sys.path's step times in seconds: {"step_s"} for score(),
    {"recorded_s"} for its recorded graph, {"recorded_batch_s"} per request for BATCH_PAIR
    requests in one recorded score_many, and {"matmul_s"}, interleaved."""
    from shared_model.traced import TracedScorer  # the package on sys.path, as the model's

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = online_config()
    model = RankerModel(cfg).eval()
    requests = [_request(cfg, n_candidates, cfg.max_seq_len) for _ in range(BATCH_PAIR)]
    traced = TracedScorer(model)
    a, b = torch.randn(MATMUL_N, MATMUL_N), torch.randn(MATMUL_N, MATMUL_N)
    t = interleaved(
        {
            "matmul": lambda: a @ b,
            "step": lambda: score(model, *requests[0]),
            "recorded": lambda: traced.score(*requests[0]),
            "recorded_batch": lambda: traced.score_many(requests),
        },
        rounds,
        5,
    )
    package = sys.modules["shared_model"].__file__
    times = {f"{name}_s": t[name] for name in ("step", "recorded", "matmul")}
    times["recorded_batch_s"] = t["recorded_batch"] / BATCH_PAIR
    print(json.dumps({**times, "package": package}))


def _materialised(model: RankerModel) -> RankerModel:
    """A copy of ``model`` whose attention reads every segment as a materialised score matrix
    (the reference form; the serving path reads the prefix through the flash kernel)."""
    copied = copy.deepcopy(model)
    for module in copied.modules():
        if isinstance(module, MultiHeadLatentAttention):
            module.fuse_first_segment = False
    return copied


def before_after(result: Result, rev: str, n_candidates: int, threads: int, rounds: int) -> None:
    """score() at this tree vs at git revision ``rev``, alternating subprocesses."""
    cfg = online_config()
    flops = scoring_flops(cfg, n_candidates, shared=True)
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "archive", rev, "shared_model"],
            check=True,
            capture_output=True,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        roots = {f"before ({rev})": tmp, "after (this tree)": str(REPO_ROOT)}
        runs: dict[str, list[dict[str, float]]] = {label: [] for label in roots}
        for _ in range(PAIRS):
            for label, root in roots.items():
                env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, str(REPO_ROOT)])}
                out = subprocess.run(
                    [
                        *(sys.executable, "-m", "loadtests.bench.scoring", "--child-step"),
                        *("--candidates", str(n_candidates), "--threads", str(threads)),
                        *("--rounds", str(rounds)),
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                    env=env,
                    cwd=root,  # sys.path[0]: its shared_model shadows the installed one
                ).stdout
                run = json.loads(out.strip().splitlines()[-1])
                if not run["package"].startswith(root):
                    raise RuntimeError(f"{label} imported {run['package']}, not {root}")
                runs[label].append(run)
    table = result.table(
        f"Before/after: score(), one request, threads {threads}",
        [
            "code",
            "matmul GFLOP/s",
            "eager ms",
            "eager x floor",
            "recorded ms",
            "recorded x floor",
            f"recorded score_many({BATCH_PAIR}) ms/request",
        ],
        note=f"Median of {PAIRS} alternating subprocess pairs, each a median of round minima; "
        "x floor is each run's step against the floor at that run's matmul rate. 'recorded': "
        "the graph the ranker replays in float32 (shared_model.traced).",
    )
    median = statistics.median
    steps: dict[str, dict[str, float]] = {}
    for label, rs in runs.items():
        rate = median(2 * MATMUL_N**3 / r["matmul_s"] for r in rs)
        steps[label] = {k: median(r[k] for r in rs) for k in rs[0] if k.endswith("_s")}
        floor_x = {
            k: median(r[k] * 2 * MATMUL_N**3 / r["matmul_s"] / flops for r in rs)
            for k in ("step_s", "recorded_s")
        }
        step = steps[label]
        table.add(
            label,
            rate / 1e9,
            step["step_s"] * 1e3,
            floor_x["step_s"],
            step["recorded_s"] * 1e3,
            floor_x["recorded_s"],
            step["recorded_batch_s"] * 1e3,
        )
    before, after = steps.values()
    result.summary.append(
        f"model step time, {rev} / this tree: eager {before['step_s'] / after['step_s']:.2f}x, "
        f"recorded {before['recorded_s'] / after['recorded_s']:.2f}x, recorded "
        f"score_many({BATCH_PAIR}) {before['recorded_batch_s'] / after['recorded_batch_s']:.2f}x"
        f" (threads {threads})"
    )


# The matrix products a step runs, as the profiler names them -> which of its inputs are the
# two operands (addmm's first is the bias).
PRODUCTS = {"aten::mm": slice(0, 2), "aten::addmm": slice(1, 3), "aten::bmm": slice(0, 2)}
Product = tuple[str, tuple[tuple[int, ...], ...]]


def matrix_products(fn: Callable[[], object]) -> list[Product]:
    """The matrix products one call of ``fn`` runs, in the order they ran: (op, the two
    operands' shapes), read from the profiler's record of its ops (a recorded graph's
    included). The fused attention kernel's own products are not among them."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities, record_shapes=True) as prof:
        fn()
    ops = sorted((e for e in prof.events() if e.name in PRODUCTS), key=lambda e: e.time_range.start)
    return [(e.name, tuple(tuple(s) for s in e.input_shapes[PRODUCTS[e.name]])) for e in ops]


def product_flops(products: list[Product]) -> int:
    """2 * M * K * N for each (batch of) product(s)."""
    return sum(2 * math.prod(a) * b[-1] for _, (a, b) in products)


def replay_products(products: list[Product]) -> Callable[[], None]:
    """A call that runs the same products in the same order, each on operands of its own
    (random, contiguous, allocated once), as a step reads each layer's own weights."""
    calls = [
        (torch.bmm if op == "aten::bmm" else torch.mm, torch.randn(a), torch.randn(b))
        for op, (a, b) in products
    ]

    def run() -> None:
        for product, a, b in calls:
            product(a, b)

    return run


def floor_gap_table(result: Result, traced: TracedScorer, request: Request, rounds: int) -> str:
    """Where the recorded float32 step's time goes against its floor (threads 1): its matrix
    products alone, replayed with their shapes in its order, and its fixed cost, the step for
    one candidate and a one-event history (op dispatch and the weights read once per step,
    whatever N and T)."""
    torch.set_num_threads(1)
    cfg = traced.model.cfg
    tiny = _request(cfg, 1, 1)
    for r in (request, tiny):  # both graphs recorded before anything is timed
        traced.score(*r)
    products = matrix_products(lambda: traced.score(*request))
    a, b = torch.randn(MATMUL_N, MATMUL_N), torch.randn(MATMUL_N, MATMUL_N)
    t = interleaved(
        {
            "matmul": lambda: a @ b,
            "step": lambda: traced.score(*request),
            "products": replay_products(products),
            "fixed": lambda: traced.score(*tiny),
        },
        rounds,
        5,
    )
    rate = 2 * MATMUL_N**3 / t["matmul"]
    flops = scoring_flops(cfg, len(request[2]), shared=True)
    floor, step, done = flops / rate, t["step"], product_flops(products)
    table = result.table(
        "The recorded step against its floor: its matrix products and its fixed cost (threads 1)",
        ["part", "GFLOP", "ms", "x floor", "x step", "GFLOP/s"],
        note="'floor': the step's counted FLOPs at the rate of a 1024^3 matmul timed in the "
        f"same rounds; 'matrix products': the {len(products)} matrix products (mm, addmm, "
        "bmm) the recorded float32 graph ran, as the profiler recorded them, replayed alone "
        "in its order, each on operands of its own (the fused attention kernel's products "
        "are not among them); 'fixed cost': the same graph for one candidate and a one-event "
        "history, the op dispatch and the weights read once per step whatever N and T. The "
        "rows overlap (the fixed cost holds small products): each is measured on its own.",
    )
    table.add("floor", flops / 1e9, floor * 1e3, 1.0, floor / step, rate / 1e9)
    table.add(
        "matrix products alone", done / 1e9, t["products"] * 1e3, t["products"] / floor,
        t["products"] / step, done / t["products"] / 1e9,
    )  # fmt: skip
    table.add("fixed cost (N = 1, T = 1)", None, t["fixed"] * 1e3, t["fixed"] / floor,
              t["fixed"] / step, None)  # fmt: skip
    table.add("the whole step", flops / 1e9, step * 1e3, step / floor, 1.0, flops / step / 1e9)
    return (
        f"the recorded step against its floor: {step / floor:.2f}x; its matrix products alone "
        f"{t['products'] / floor:.2f}x ({done / t['products'] / 1e9:.0f} against "
        f"{rate / 1e9:.0f} GFLOP/s), its fixed cost (N = 1, T = 1) {t['fixed'] / floor:.2f}x "
        "(threads 1)"
    )


def first_replay_table(result: Result, model: RankerModel, requests: list[Request], rounds: int):
    """A newly recorded graph's first replays, in a scorer that runs it until the executor has
    built its plan at recording (as the ranker scores) and in one that leaves that to the
    first replays (``TracedScorer(ready=False)``): each round records the case of
    ``len(requests)`` users afresh in both, then replays it three times (threads 1)."""
    from shared_model.traced import TracedScorer

    torch.set_num_threads(1)
    calls = ["recording", "first replay", "second replay", "third replay"]
    times: dict[bool, list[list[float]]] = {True: [], False: []}
    for _ in range(rounds):
        for ready in (True, False):
            scorer, row = TracedScorer(model, ready=ready), []
            for _ in calls:
                start = time.perf_counter()
                scorer.score_many(requests)
                row.append(time.perf_counter() - start)
            times[ready].append(row)
    ms = {
        ready: [statistics.median(c) * 1e3 for c in zip(*rows, strict=True)]
        for ready, rows in times.items()
    }
    G = len(requests)
    table = result.table(
        f"A newly recorded graph's first replays: {G} users (threads 1)",
        ["call", "ready at recording ms", "left to the first replays ms", "ratio"],
        note="Both: the float32 graph frozen and optimised, recorded by the first call. "
        "TorchScript's profiling executor profiles a graph's first run and builds its "
        "optimised plan on the next; 'ready at recording' runs the graph that often on the "
        "recording batch (TracedScorer, as the ranker scores: warm-up records the usual "
        "cases, a rarer one is recorded by the first request that needs it), 'left to the "
        f"first replays' does not (TracedScorer(ready=False)). Medians over {rounds} rounds, "
        "each recording afresh.",
    )
    for name, a, b in zip(calls, ms[True], ms[False], strict=True):
        table.add(name, a, b, b / a)
    return (
        f"a new graph's first replay ({G} users): {ms[True][1]:.1f} ms ready at recording "
        f"against {ms[False][1]:.1f} ms left to the executor (the third replay "
        f"{ms[True][3]:.1f} ms; recording {ms[True][0]:.0f} against {ms[False][0]:.0f} ms; "
        "threads 1)"
    )


def _timed_against_floor(
    model: RankerModel,
    calls: dict[str, Callable[[], object]],
    recorded: dict[str, tuple[TracedScorer, torch.dtype | None]],
    requests: list[Request],
    matmul_dtype: torch.dtype,
    rounds: int,
) -> tuple[dict[str, float], float, float]:
    """Adds each recorded scorer's one-request and G-request calls (both graphs recorded
    first) and a matmul in ``matmul_dtype`` to ``calls``, times them all in interleaved
    rounds -> (times, the matmul's FLOP/s, the step's floor at that rate)."""
    first = requests[0]
    for name, (scorer, dtype) in recorded.items():
        scorer.score_many(requests[:1], dtype), scorer.score_many(requests, dtype)
        calls[name] = lambda s=scorer, d=dtype: s.score(*first, d)
        calls[name + " many"] = lambda s=scorer, d=dtype: s.score_many(requests, d)
    a = torch.randn(MATMUL_N, MATMUL_N, dtype=matmul_dtype)
    b = torch.randn(MATMUL_N, MATMUL_N, dtype=matmul_dtype)
    calls["matmul"] = lambda: a @ b
    t = interleaved(calls, rounds, 3)
    rate = 2 * MATMUL_N**3 / t["matmul"]
    return t, rate, scoring_flops(model.cfg, len(first[2]), shared=True) / rate


def bf16_table(
    result: Result, model: RankerModel, requests: list[Request], threads: int, rounds: int
) -> str:
    """float32 vs bf16 autocast vs bf16 with the weights cast once; returns the summary line."""
    from shared_model.inference import cast_weights_for_autocast, score_many
    from shared_model.traced import TracedScorer

    torch.set_num_threads(threads)
    bf16 = torch.bfloat16
    cast = cast_weights_for_autocast(copy.deepcopy(model), bf16)
    first, G = requests[0], len(requests)
    ref = score(model, *first)
    variants = {
        "float32": (model, None),
        "bf16 autocast, float32 weights": (model, bf16),
        "bf16, weights cast at load": (cast, bf16),
    }
    calls = {}
    for name, (m, dtype) in variants.items():
        calls[name] = lambda m=m, dtype=dtype: score(m, *first, autocast_dtype=dtype)
        calls[name + " many"] = lambda m=m, dtype=dtype: score_many(
            m, requests, autocast_dtype=dtype
        )
    recorded = {
        RECORDED_F32: (TracedScorer(model), None),
        RECORDED_BF16: (TracedScorer(cast), bf16),
    }
    # as a float32 and a bf16 ranker score
    t, rate, floor = _timed_against_floor(model, calls, recorded, requests, bf16, rounds)
    table = result.table(
        f"bf16 on this CPU: one request and {G} together (threads {threads})",
        ["precision", "step ms", "x float32", "x bf16 floor", f"score_many({G}) ms/request",
         "max |Δp| vs float32"],
        note=f"bf16 floor: the step's FLOPs at the bf16 rate of a {MATMUL_N}^3 matmul timed in "
        f"the same rounds ({rate / 1e9:.0f} GFLOP/s). Random weights: |Δp| shows the precision, "
        "not its effect on NE (python -m shared_model.experiments.precision measures that on "
        "trained models).",
    )  # fmt: skip
    answers = {name: lambda m=m, dtype=dtype: score(m, *first, autocast_dtype=dtype)
               for name, (m, dtype) in variants.items()}  # fmt: skip
    for name, (scorer, dtype) in recorded.items():
        answers[name] = lambda s=scorer, d=dtype: s.score(*first, d)
    for name, answer in answers.items():
        diff = (answer() - ref).abs().max().item()
        step = t[name]
        table.add(name, step * 1e3, t["float32"] / step, step / floor, t[name + " many"] * 1e3 / G,
                  diff)  # fmt: skip
    auto, cast_s = t["bf16 autocast, float32 weights"], t["bf16, weights cast at load"]
    return (
        f"bf16 weights cast at load: {auto / cast_s:.2f}x faster than autocast on float32 "
        f"weights, {t['float32'] / cast_s:.2f}x faster than float32 (one request, threads "
        f"{threads}); recorded graphs: bf16 {t[RECORDED_BF16] * 1e3:.1f} ms vs float32 "
        f"{t[RECORDED_F32] * 1e3:.1f} ms ({t[RECORDED_F32] / t[RECORDED_BF16]:.2f}x), "
        f"score_many({G}) {t[RECORDED_BF16 + ' many'] * 1e3 / G:.1f} vs "
        f"{t[RECORDED_F32 + ' many'] * 1e3 / G:.1f} ms/request"
    )


def int8_table(
    result: Result, model: RankerModel, requests: list[Request], threads: int, rounds: int
) -> str:
    """float32 vs int8 (eager and recorded), one request and G together; the summary line."""
    from shared_model.inference import score_many
    from shared_model.quantize import quantize_int8
    from shared_model.traced import TracedScorer

    torch.set_num_threads(threads)
    int8 = quantize_int8(model)
    first, G = requests[0], len(requests)
    ref = score(model, *first)
    recorded = {
        RECORDED_F32: (TracedScorer(model), None),
        RECORDED_INT8: (TracedScorer(int8), None),
        RECORDED_INT8_ALL: (TracedScorer(quantize_int8(model, within="")), None),
    }
    calls: dict[str, Callable[[], object]] = {
        "int8, eager": lambda: score(int8, *first),
        "int8, eager many": lambda: score_many(int8, requests),
    }
    t, rate, floor = _timed_against_floor(model, calls, recorded, requests, torch.float32, rounds)
    table = result.table(
        f"int8 on this CPU: one request and {G} together (threads {threads})",
        ["precision", "step ms", "x float32", "x float32 floor", f"score_many({G}) ms/request",
         "max |Δp| vs float32"],
        note="'int8': the sequence module's Linear layers in int8, as the ranker serves with "
        "RANKER_QUANTIZE=int8; 'with DHEN and heads': every eligible Linear layer. "
        f"float32 floor: the step's FLOPs at the fp32 rate of a {MATMUL_N}^3 matmul timed "
        f"in the same rounds ({rate / 1e9:.0f} GFLOP/s). Random weights: |Δp| shows the "
        "precision, not its effect on NE (python -m shared_model.experiments.precision "
        "measures that on trained models).",
    )  # fmt: skip
    answers = {"int8, eager": lambda: score(int8, *first)}
    answers.update({name: lambda s=s: s.score(*first) for name, (s, _) in recorded.items()})
    f32 = t[RECORDED_F32]
    for name, answer in answers.items():
        step = t[name]
        table.add(name, step * 1e3, f32 / step, step / floor, t[name + " many"] * 1e3 / G,
                  (answer() - ref).abs().max().item())  # fmt: skip
    i8, i8_all = t[RECORDED_INT8], t[RECORDED_INT8_ALL]
    return (
        f"int8 recorded graph: {i8 * 1e3:.1f} ms vs float32 {f32 * 1e3:.1f} ms "
        f"({f32 / i8:.2f}x, {i8 / floor:.2f}x the float32 floor; {i8_all * 1e3:.1f} ms with the "
        f"DHEN and heads in int8 too, {i8 / i8_all:.2f}x faster), score_many({G}) "
        f"{t[RECORDED_INT8 + ' many'] * 1e3 / G:.1f} vs {t[RECORDED_F32 + ' many'] * 1e3 / G:.1f} "
        f"ms/request (threads {threads})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batches", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--compile", action="store_true", help="also time torch.compile of the decode step"
    )
    parser.add_argument(
        "--bf16", choices=["auto", "yes", "no"], default="auto",
        help="the bf16 table; auto: when the CPU multiplies bf16 natively (AVX512-BF16/AMX)",
    )  # fmt: skip
    parser.add_argument(
        "--int8", choices=["yes", "no"], default="yes", help="the int8 table (RANKER_QUANTIZE)"
    )
    parser.add_argument(
        "--isa", choices=sorted(ISA_CAPS), default=None,
        help="cap the instruction set of torch's CPU kernels (ATen, oneDNN, MKL, FBGEMM) at "
        "this one: an AVX2-only CPU measured on a newer one",
    )  # fmt: skip
    parser.add_argument("--baseline", default=None, help="git revision to compare against")
    parser.add_argument(
        "--tag", default="", help="appended to the result's name (e.g. the machine: xeon-amx)"
    )
    parser.add_argument("--child-step", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help="result JSON (default results/scoring.json)")
    args = parser.parse_args(argv)
    if args.child_step:
        _child_step(args.candidates, args.threads[0], args.rounds)
        return 0
    cap_isa(args.isa, "loadtests.bench.scoring", argv if argv is not None else sys.argv[1:])
    # not in a --baseline revision's package
    from shared_model.inference import cpu_has_native_bf16, score_many
    from shared_model.traced import TracedScorer

    torch.manual_seed(0)
    cfg = online_config()
    model = RankerModel(cfg).eval()
    N, T = args.candidates, cfg.max_seq_len
    flops = scoring_flops(cfg, N, shared=True)
    result = Result(
        "scoring" + (f"-{args.tag}" if args.tag else ""),
        "Online model step vs its FLOPs floor; several requests scored together"
        + (f", {args.tag}" if args.tag else ""),
        command_line("loadtests.bench.scoring", argv if argv is not None else sys.argv[1:]),
        description=(
            f"The configured online model (T = {T}, d_model {cfg.d_model}, {cfg.n_layers} "
            f"layers, pyramid {cfg.pyramid}), N = {N} candidates, full histories. The floor is "
            f"the counted FLOPs of the shared-sequence step ({flops / 1e9:.3f} GFLOP) at the "
            "fp32 rate of a 1024^3 matmul timed in the same interleaved rounds at the same "
            "thread count. Times are medians of per-round minima over interleaved rounds."
        ),
    )
    step = result.table(
        "score(): one request, model step",
        ["threads", "matmul GFLOP/s", "floor ms", "absorbed ms", "x floor", "sdpa ms",
         "as recorded ms", "prefix materialised ms", "recorded ms", "recorded x floor"],
        note="'absorbed': the eager serving path; 'sdpa': the same model with SDPA attention; "
        "'recorded': the absorbed step replayed as a TorchScript graph, frozen and optimised "
        "for inference (shared_model.traced, as the ranker scores in float32); 'as recorded': "
        "the same graph without those passes (TracedScorer(optimize=False)); 'prefix "
        "materialised': the recorded graph of the model with the candidates' read of the "
        "prefix as a materialised score matrix instead of the flash kernel "
        "(MultiHeadLatentAttention.fuse_first_segment = False).",
    )  # fmt: skip
    many = result.table(
        "score_many(): G requests together vs G calls of score()",
        ["threads", "G", "loop ms/request", "score_many ms/request", "speed-up",
         "recorded ms/request"],
        note="Each request: its own user, full history, N candidates.",
    )  # fmt: skip
    requests = [_request(cfg, N, T) for _ in range(max(args.batches))]
    first = requests[0]
    traced = TracedScorer(model)
    as_recorded = TracedScorer(model, optimize=False)
    materialised = TracedScorer(_materialised(model))
    headline, optimised, fused = None, None, None
    for threads in args.threads:
        torch.set_num_threads(threads)
        matmul_rate(seconds=0.3)  # warm the BLAS at this thread count
        a, b = torch.randn(MATMUL_N, MATMUL_N), torch.randn(MATMUL_N, MATMUL_N)
        times = interleaved(
            {
                "matmul": lambda a=a, b=b: a @ b,
                "absorbed": lambda: score(model, *first),
                "sdpa": lambda: score(model, *first, impl="sdpa"),
                "as recorded": lambda: as_recorded.score(*first),
                "materialised": lambda: materialised.score(*first),
                "recorded": lambda: traced.score(*first),
            },
            args.rounds,
            5,
        )
        rate = 2 * MATMUL_N**3 / times["matmul"]  # the same rounds as the model step
        floor = flops / rate
        ratio = times["absorbed"] / floor
        headline = headline or (ratio, times["recorded"] / floor)
        optimised = optimised or (times["recorded"], times["as recorded"])
        fused = fused or (times["recorded"], times["materialised"])
        step.add(
            threads,
            rate / 1e9,
            floor * 1e3,
            times["absorbed"] * 1e3,
            ratio,
            times["sdpa"] * 1e3,
            times["as recorded"] * 1e3,
            times["materialised"] * 1e3,
            times["recorded"] * 1e3,
            times["recorded"] / floor,
        )
        for G in args.batches:
            batch = requests[:G]
            t = interleaved(
                {
                    "loop": lambda b=batch: [score(model, *r) for r in b],
                    "many": lambda b=batch: score_many(model, b),
                    "recorded": lambda b=batch: traced.score_many(b),
                },
                args.rounds,
                2,
            )
            many.add(
                threads, G, t["loop"] * 1e3 / G, t["many"] * 1e3 / G, t["loop"] / t["many"],
                t["recorded"] * 1e3 / G,
            )  # fmt: skip
    side_line = side_by_side_table(result, model, traced, first, args.rounds)
    gap_line = floor_gap_table(result, traced, first, args.rounds)
    replay_line = first_replay_table(result, model, requests[:2], min(args.rounds, 5))
    bf16_line = None
    if args.bf16 == "yes" or (args.bf16 == "auto" and cpu_has_native_bf16() and not args.isa):
        bf16_line = bf16_table(result, model, requests[: max(args.batches)], args.threads[0],
                               args.rounds)  # fmt: skip
    int8_line = None
    if args.int8 == "yes":
        int8_line = int8_table(result, model, requests[: max(args.batches)], args.threads[0],
                               args.rounds)  # fmt: skip
    if args.baseline:
        before_after(result, args.baseline, N, args.threads[0], args.rounds)
    if args.compile:
        compile_table(result, model, first, args.threads[0], args.rounds)
    if bf16_line:
        result.summary.append(bf16_line)
    if int8_line:
        result.summary.append(int8_line)
    result.summary.append(side_line)
    result.summary.append(gap_line)
    result.summary.append(replay_line)
    result.summary.append(
        f"recorded graph frozen and optimised: {optimised[0] * 1e3:.1f} ms vs "
        f"{optimised[1] * 1e3:.1f} ms as recorded ({optimised[1] / optimised[0]:.2f}x, "
        f"threads {args.threads[0]})"
    )
    result.summary.append(
        f"prefix read by the flash kernel: {fused[0] * 1e3:.1f} ms vs {fused[1] * 1e3:.1f} ms "
        f"materialised ({fused[1] / fused[0]:.2f}x, recorded graphs, threads {args.threads[0]})"
    )
    result.summary.append(
        f"model vs floor: {headline[1]:.2f}x (threads {args.threads[0]}, recorded graph, as the "
        f"ranker scores; the eager step: {headline[0]:.2f}x)"
    )
    result.write(Path(args.out) if args.out else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
