"""Ranker feature-path micro-benchmark: ``python -m loadtests.bench.features``.

What one ``POST /v1/rank`` costs before the model runs, at the production shape (the online
config: T = 400, 400 + 400 stored history records with 32-d content, a 2048-d upstream
embedding, N = 100 candidates with content by id), on a real redis-server, in one run:

* the pipelined Redis read (embedding + both histories + content by id), four ways: redis-py's
  pure-Python reply parser or hiredis, the history read WITHSCORES or without;
* the ranker's own read (``FeatureStore.fetch``: versioned and version-1 embedding keys, both
  histories, content cached) through its two readers, the multiplexed connection and
  redis.asyncio's pipeline (the reference), as the event loop's thread CPU and wall time per
  read, back to back and right after a 5 ms sleep;
* decoding the replies into the model's input tensors (history EventBatch, upstream feature,
  candidates, context): the per-record reference path (``HistoryRecord.decode`` per member,
  ``EventBatch.from_records``, ``EmbeddingRecord.decode`` and Python lists per candidate,
  uncached blake2b per id) against the serving path (one ``np.frombuffer`` per record length,
  ``torch.from_numpy``, cached id hashes), with the content-vector cache cold and warm, and
  with the history built through the columns path;
* the same warm decode, thread CPU, timed back to back, right after 0.5, 5 and 20 ms of
  spinning on the same thread, right after a 5 ms sleep and right after one step of the online
  model (random weights, its recorded graph, as the ranker scores): what the caches and
  predictors the decode finds left behind cost it. The spinning touches almost no memory, so
  what it costs the decode is the rest of the machine's doing, not the model's. In the ranker
  the decode always follows a model step or an idle wait. ``--no-model`` skips this table;
* the request body (the N candidates by content id, with their float features) decoded into
  the request the ranker serves: the reference, pydantic's ``RankRequest``, against the serving
  decoder (msgspec, ``ranker_service.request_decoder``), thread CPU, back to back and right
  after a 5 ms sleep.

Each variant runs ``--reps`` times, interleaved; medians and p99 in ms, ratios within the run.
Writes ``docs/benchmarks/results/features.json`` (``features-<tag>.json`` with ``--tag``, or
``--out``). A benchmark: it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import random
import struct
import sys
import time
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import TypeVar

import msgspec
import orjson
import redis.asyncio as aioredis
import torch
from redis._parsers import _AsyncHiredisParser, _AsyncRESP2Parser

from loadtests.bench.common import Result, command_line, percentile
from loadtests.stack.servers import RedisServer
from ranker_service.content_cache import ContentCache
from ranker_service.features import (
    build_candidates,
    decide_embedding,
    history_events,
    request_context,
    resolve_content,
)
from ranker_service.records import event_batch, recent_history
from ranker_service.routes.rank import parse_rank_request, validate_rank_request
from ranker_service.schemas import Candidate
from ranker_service.settings import Settings
from ranker_service.store import FeatureStore, FetchOutcome
from shared_model.config import LLaTTEConfig, online_config
from shared_model.contract import (
    EMBEDDING_FIELD_RECORD,
    HISTORY_SOURCES,
    ActionType,
    EmbeddingRecord,
    HistoryRecord,
    content_embedding_key,
    embedding_key,
    history_key,
    merge_histories,
    source_of,
    stable_hash,
)
from shared_model.features import Candidates, Context, EventBatch, UpstreamFeature
from shared_model.ranker import RankerModel
from shared_model.traced import TracedScorer

NOW_MS = 1_750_000_000_000
USER = "bench-user"
UPSTREAM = "bench-upstream"


K = TypeVar("K", bound=Hashable)  # a variant's name


def seed(client, cfg: LLaTTEConfig, per_source: int, n_candidates: int, rng: random.Random):
    """``per_source`` records in each history source, the embedding, N content records."""
    actions = {src: [a for a in ActionType if source_of(a) == src] for src in HISTORY_SOURCES}
    for src in HISTORY_SOURCES:
        members = {}
        for i in range(per_source):
            record = HistoryRecord(
                timestamp_ms=NOW_MS - 3_600_000 + 1000 * i + (src == "imp") * 500,
                action_type=actions[src][i % len(actions[src])],
                item_hash=stable_hash(f"item-{rng.randrange(10**5)}"),
                surface_hash=stable_hash("feed"),
                event_hash=rng.getrandbits(62),
                value=1.0,
                content=tuple(rng.gauss(0, 1) for _ in range(cfg.content_dim)),
            )
            members[record.encode()] = record.timestamp_ms
        client.zadd(history_key(USER, src), members)
    vector = tuple(rng.gauss(0, 1) for _ in range(cfg.d_upstream))
    emb = EmbeddingRecord(vector, UPSTREAM, NOW_MS - 60_000, NOW_MS - 61_000, 800)
    client.hset(embedding_key(USER), EMBEDDING_FIELD_RECORD, emb.encode())
    for i in range(n_candidates):
        content = tuple(rng.gauss(0, 1) for _ in range(cfg.content_dim))
        record = EmbeddingRecord(content, "bench-content", NOW_MS, NOW_MS, 0)
        client.set(content_embedding_key(f"content-{i}"), record.encode())


def candidates(cfg: LLaTTEConfig, n: int, rng: random.Random) -> list[Candidate]:
    return [
        Candidate(
            ad_id=f"ad-{i}",
            advertiser_id=f"adv-{i % 40}",
            content_id=f"content-{i}",
            floats=[rng.random() for _ in range(cfg.n_candidate_floats)],
        )
        for i in range(n)
    ]


# ----------------------------------------------------------------------------------------------
# The Redis read
# ----------------------------------------------------------------------------------------------


async def read(client, cfg: LLaTTEConfig, content_ids: Sequence[str], withscores: bool):
    """The ranker's one pipelined round trip (ranker_service.store.FeatureStore.fetch)."""
    pipe = client.pipeline(transaction=False)
    pipe.hget(embedding_key(USER), EMBEDDING_FIELD_RECORD)
    for source in HISTORY_SOURCES:
        pipe.zrange(history_key(USER, source), -cfg.max_seq_len, -1, withscores=withscores)
    if content_ids:
        pipe.mget([content_embedding_key(c) for c in content_ids])
    replies = await pipe.execute()
    embedding, history = replies[0], [replies[1], replies[2]]
    content = dict(zip(content_ids, replies[3], strict=True)) if content_ids else {}
    return embedding, history, content


async def time_reads(url: str, cfg: LLaTTEConfig, content_ids: list[str], reps: int):
    clients = {
        "python parser": aioredis.Redis.from_url(url, parser_class=_AsyncRESP2Parser),
        "hiredis": aioredis.Redis.from_url(url, parser_class=_AsyncHiredisParser),
    }
    variants = {
        (parser, scores, ids): (clients[parser], scores, ids)
        for parser in clients
        for scores in (True, False)
        for ids in (tuple(content_ids),)
    }
    variants[("hiredis", False, ())] = (clients["hiredis"], False, ())  # content cached
    times: dict[tuple, list[float]] = {k: [] for k in variants}
    try:
        for _ in range(reps):
            for key, (client, scores, ids) in variants.items():
                start = time.perf_counter()
                await read(client, cfg, ids, scores)
                times[key].append((time.perf_counter() - start) * 1e3)
        samples = {k: await read(c, cfg, ids, s) for k, (c, s, ids) in variants.items()}
    finally:
        for client in clients.values():
            await client.aclose()
    return times, samples


READERS = {"multiplexed": "multiplexed (serving)", "redis-py": "redis.asyncio pipeline (reference)"}


async def time_store_reads(url: str, cfg: LLaTTEConfig, reps: int) -> dict[tuple, list[float]]:
    """``FeatureStore.fetch`` through each reader, interleaved: thread CPU and wall ms per read,
    back to back and right after a 5 ms sleep (the event loop idles between requests)."""
    stores = {r: FeatureStore(Settings(redis_url=url, redis_reader=r)) for r in READERS}

    async def fetch(store: FeatureStore):
        data = await store.fetch(
            USER, history_limit=cfg.max_seq_len, read_embedding=True, read_history=True,
            embedding_version=UPSTREAM,
        )  # fmt: skip
        if data.outcome is not FetchOutcome.OK:
            raise RuntimeError(f"the bench's read failed: {data.outcome}")
        return data.embedding, data.history

    times: dict[tuple, list[float]] = {}
    try:
        replies = [await fetch(store) for store in stores.values()]  # connected, and equal
        if replies[0] != replies[1]:
            raise RuntimeError("the two readers returned different bytes")
        for _ in range(reps):
            for pause in (0.0, 0.005):
                for reader, store in stores.items():
                    if pause:
                        await asyncio.sleep(pause)
                    cpu, wall = time.thread_time(), time.perf_counter()
                    await fetch(store)
                    key = (reader, pause)
                    times.setdefault((*key, "cpu"), []).append((time.thread_time() - cpu) * 1e3)
                    times.setdefault((*key, "wall"), []).append((time.perf_counter() - wall) * 1e3)
    finally:
        for store in stores.values():
            await store.aclose()
    return times


# ----------------------------------------------------------------------------------------------
# Decoding into tensors: the per-record reference path and the serving path
# ----------------------------------------------------------------------------------------------


def _newest_first(history_pairs, limit: int) -> list[HistoryRecord]:
    """The previous serving decoder: by score newest first, stopping once ``limit`` decoded."""
    pairs = sorted(((s, raw) for ms in history_pairs for raw, s in ms), key=lambda p: p[0])
    records: list[HistoryRecord] = []
    cutoff = None
    for score, raw in reversed(pairs):
        if cutoff is not None and score < cutoff:
            break
        with contextlib.suppress(ValueError, struct.error):
            records.append(HistoryRecord.decode(raw))
            if cutoff is None and len(records) >= limit:
                cutoff = score
    return merge_histories(records, limit=limit)


def reference_features(cfg, history_pairs, embedding_raw, content_raw, cands, early_stop=False):
    """Per record and per candidate, in Python objects: what the ranker did before."""
    if early_stop:
        history = _newest_first(history_pairs, cfg.max_seq_len)
    else:
        records = []
        for members in history_pairs:
            for raw, _score in members:
                with contextlib.suppress(ValueError, struct.error):  # skipped, as the ranker did
                    records.append(HistoryRecord.decode(raw))
        history = merge_histories(records, limit=cfg.max_seq_len)
    events = EventBatch.from_records([history], cfg.max_seq_len, cfg.content_dim)
    record = EmbeddingRecord.decode(embedding_raw, expected_dim=cfg.d_upstream)
    upstream = UpstreamFeature(
        torch.tensor(record.vector, dtype=torch.float32)[None, :], torch.ones(1, dtype=torch.bool)
    )
    E, F, N = cfg.content_dim, cfg.n_candidate_floats, len(cands)
    rows = [EmbeddingRecord.decode(content_raw[c.content_id], expected_dim=E).vector for c in cands]
    tensors = Candidates(
        ad_hash=torch.tensor([stable_hash(c.ad_id) for c in cands], dtype=torch.long),
        advertiser_hash=torch.tensor([stable_hash(c.advertiser_id) for c in cands]),
        content=torch.tensor(rows, dtype=torch.float32).view(N, E),
        has_content=torch.ones(N, dtype=torch.bool),
        floats=torch.tensor([c.floats for c in cands], dtype=torch.float32).view(N, F),
    )
    ctx = Context.make([NOW_MS], [USER], ["feed"], ["ios"])
    return events, upstream, tensors, ctx


def columns_history(history, length: int, content_dim: int):
    """The history as the columns path builds it (every record's columns cast, then sorted,
    trimmed and copied): what the serving path ran before its whole-row fast path."""
    columns, corrupt = recent_history(history, length, content_dim)
    return event_batch(columns, length, content_dim), len(columns), corrupt


def serving_features(
    cfg, history, embedding_raw, content_raw, cands, cache: ContentCache, history_fn=None
):
    """ranker_service.ranking._prepare_in_worker's feature building, with the content cache."""
    events, _, _ = (history_fn or history_events)(history, cfg.max_seq_len, cfg.content_dim)
    decision = decide_embedding(
        embedding_raw, FetchOutcome.OK, cfg, UPSTREAM, NOW_MS, 10**12, enabled=True
    )
    ids = sorted({c.content_id for c in cands})
    cached = cache.get_many(ids, cfg.content_dim)
    fresh, _ = resolve_content(cands, FetchOutcome.OK, content_raw, cached, cfg.content_dim)
    cache.put_many(fresh, cfg.content_dim)
    tensors = build_candidates(cands, cfg, {**cached, **fresh})
    ctx = request_context(NOW_MS, USER, "feed", "ios")
    return events, decision.feature, tensors, ctx


def interleaved_ms(
    variants: dict[K, Callable[[], object]],
    reps: int,
    clock: Callable[[], float] = time.perf_counter,
    setup: dict[K, Callable[[], object]] | None = None,
) -> dict[K, list[float]]:
    """Each variant ``reps`` times, round-robin, in ms by ``clock``; ``setup[name]`` runs
    untimed right before its variant."""
    times: dict[K, list[float]] = {name: [] for name in variants}
    for _ in range(reps):
        for name, fn in variants.items():
            if setup is not None:
                setup[name]()
            start = clock()
            fn()
            times[name].append((clock() - start) * 1e3)
    return times


def spin(seconds: float, clock: Callable[[], float] = time.perf_counter) -> None:
    """Keep this thread busy for ``seconds`` on a loop that touches almost no memory: what
    the caches lose meanwhile, they lose to the rest of the machine, not to this thread."""
    end = clock() + seconds
    while clock() < end:
        pass


SPINS = {"0.5 ms of spinning": 0.0005, "5 ms of spinning": 0.005, "20 ms of spinning": 0.02}


def after_table(result: Result, cfg: LLaTTEConfig, decode: Callable[[], tuple], reps: int):
    """The warm decode's thread CPU after nothing, after spinning on this thread for a while,
    after a sleep and after a model step; returns the medians (ms) by what ran before."""
    events, upstream, cands, ctx = decode()
    scorer = TracedScorer(RankerModel(cfg).eval())
    request = [(events, ctx, cands, upstream)]
    scorer.score_many(request, None)  # records the graph
    steps = interleaved_ms({"step": lambda: scorer.score_many(request, None)}, 5)["step"]
    before: dict[str, Callable[[], object]] = {
        "nothing (back to back)": lambda: None,
        **{name: functools.partial(spin, seconds) for name, seconds in SPINS.items()},
        "a 5 ms sleep": lambda: time.sleep(0.005),
        "one model step": lambda: scorer.score_many(request, None),
    }
    cpu = interleaved_ms(dict.fromkeys(before, decode), reps, time.thread_time, before)
    table = result.table(
        "The warm decode after what ran before it (thread CPU)",
        ["before it", "p50 ms", "p99 ms", "vs back to back"],
        note="The same serving decode (content cache warm) as above, timed with "
        "time.thread_time; the model step is the online model's recorded graph, random "
        f"weights ({_median(steps):.1f} ms a step here, median of 5). Spinning keeps this "
        "thread on its core on a loop that touches almost no memory: a decode that is slower "
        "after it than back to back found its code and data evicted by the rest of the "
        "machine (other processes, other guests on the host), not by the model.",
    )
    base = _median(cpu["nothing (back to back)"])
    for name, xs in cpu.items():
        table.add(name, _median(xs), percentile(xs, 99), f"{_median(xs) / base:.2f}x")
    return {name: _median(xs) for name, xs in cpu.items()}


REFERENCE, SERVING = "pydantic RankRequest (reference)", "msgspec (serving)"
BACK_TO_BACK, SLEPT = "nothing (back to back)", "a 5 ms sleep"


def body_table(result: Result, body: bytes, reps: int) -> dict[tuple[str, str], float]:
    """The request body decoded by the reference and by the serving decoder, thread CPU, back
    to back and after a 5 ms sleep, interleaved; returns the medians (ms) by (decoder, what ran
    before it)."""
    served, reference = parse_rank_request(body), validate_rank_request(body)
    if msgspec.to_builtins(served) != reference.model_dump(mode="json"):
        raise RuntimeError("the serving decoder and the reference read the body differently")
    decoders = {REFERENCE: validate_rank_request, SERVING: parse_rank_request}
    before = {BACK_TO_BACK: lambda: None, SLEPT: lambda: time.sleep(0.005)}
    keys = [(d, b) for b in before for d in decoders]
    cpu = interleaved_ms(
        {(d, b): functools.partial(decoders[d], body) for d, b in keys},
        reps,
        time.thread_time,
        {(d, b): before[b] for d, b in keys},
    )
    table = result.table(
        f"Request body decode ({len(body):,} bytes; thread CPU)",
        ["decoder", "before it", "p50 ms", "p99 ms", "vs reference"],
        note="The body of the requests above, decoded into the request the ranker serves; "
        "a body the serving decoder does not accept goes to the reference.",
    )
    medians = {k: _median(xs) for k, xs in cpu.items()}
    for (decoder, ran), xs in cpu.items():
        ratio = medians[decoder, ran] / medians[REFERENCE, ran]
        table.add(decoder, ran, medians[decoder, ran], percentile(xs, 99), f"{ratio:.2f}x")
    return medians


def _median(xs: list[float]) -> float:
    return percentile(xs, 50)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--per-source", type=int, default=400, help="records per history source")
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--no-model", action="store_true", help="skip the decode-after-a-model-step table"
    )
    parser.add_argument(
        "--tag", default="", help="appended to the result's name (e.g. the machine: xeon-amx)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # the ranker's inference thread
    cfg = online_config()
    rng = random.Random(0)
    cands = candidates(cfg, args.candidates, rng)
    content_ids = [c.content_id for c in cands]
    result = Result(
        f"features-{args.tag}" if args.tag else "features",
        "Ranker feature path (Redis read, decode, tensors)" + (f", {args.tag}" if args.tag else ""),
        command_line("loadtests.bench.features", argv if argv is not None else sys.argv[1:]),
        description=(
            f"One user with {args.per_source} + {args.per_source} stored history records "
            f"({cfg.content_dim}-d content), a {cfg.d_upstream}-d upstream embedding and "
            f"N = {args.candidates} candidates with content by id, on a local redis-server; "
            f"T = {cfg.max_seq_len}, 1 torch thread, {args.reps} interleaved repetitions."
        ),
    )
    with RedisServer() as server:
        seed(server.client(), cfg, args.per_source, args.candidates, rng)
        read_times, samples = asyncio.run(time_reads(server.url, cfg, content_ids, args.reps))
        store_times = asyncio.run(time_store_reads(server.url, cfg, args.reps))

    table = result.table(
        "Redis read (one pipelined round trip)",
        ["parser", "history scores", "content by id", "p50 ms", "p99 ms", "vs before"],
    )
    before_read = _median(read_times[("python parser", True, tuple(content_ids))])
    for (parser_name, scores, ids), xs in read_times.items():
        table.add(
            parser_name,
            "WITHSCORES" if scores else "none",
            f"{len(ids)} read" if ids else "cached",
            _median(xs),
            percentile(xs, 99),
            f"{_median(xs) / before_read:.2f}x",
        )

    table = result.table(
        "The ranker's read, by reader (event loop thread CPU and wall time per read)",
        ["reader", "before it", "CPU p50 ms", "CPU p99 ms", "wall p50 ms", "CPU vs reference"],
        note="FeatureStore.fetch as the ranker calls it: the versioned and the version-1 "
        "embedding keys and both histories (content vectors cached, none read), through each "
        "of RANKER_REDIS_READER's readers, interleaved; the loop runs nothing else.",
    )
    cpu_ms = {}
    for pause, ran in ((0.0, "nothing (back to back)"), (0.005, "a 5 ms sleep")):
        reference = _median(store_times[("redis-py", pause, "cpu")])
        for reader, label in READERS.items():
            cpu, wall = store_times[(reader, pause, "cpu")], store_times[(reader, pause, "wall")]
            table.add(
                label, ran, _median(cpu), percentile(cpu, 99), _median(wall),
                f"{_median(cpu) / reference:.2f}x",
            )  # fmt: skip
            cpu_ms[reader, pause] = _median(cpu)
    read_line = (
        f"the ranker's Redis read, event loop CPU: multiplexed {cpu_ms['multiplexed', 0.0]:.3f} "
        f"ms against redis.asyncio's pipeline {cpu_ms['redis-py', 0.0]:.3f} ms back to back "
        f"({cpu_ms['multiplexed', 0.0] / cpu_ms['redis-py', 0.0]:.2f}x), "
        f"{cpu_ms['multiplexed', 0.005]:.3f} against {cpu_ms['redis-py', 0.005]:.3f} ms "
        f"after a 5 ms sleep ({cpu_ms['multiplexed', 0.005] / cpu_ms['redis-py', 0.005]:.2f}x)"
    )

    _, pairs, content_raw = samples[("python parser", True, tuple(content_ids))]
    embedding_raw, members, _ = samples[("hiredis", False, tuple(content_ids))]
    variants: dict[str, Callable[[], object]] = {
        "per-record reference": lambda: reference_features(
            cfg, pairs, embedding_raw, content_raw, cands
        ),
        "previous serving code (newest first, early stop)": lambda: reference_features(
            cfg, pairs, embedding_raw, content_raw, cands, early_stop=True
        ),
        "serving, content cache cold": lambda: serving_features(
            cfg, members, embedding_raw, content_raw, cands, ContentCache(0, 60)
        ),
    }
    warm = ContentCache(10_000, 3600)
    serving_features(cfg, members, embedding_raw, content_raw, cands, warm)
    variants["serving, content cache warm"] = lambda: serving_features(
        cfg, members, embedding_raw, {}, cands, warm
    )
    variants["serving, content cache warm, history by columns"] = lambda: serving_features(
        cfg, members, embedding_raw, {}, cands, warm, columns_history
    )
    decode_times = interleaved_ms(variants, args.reps)
    table = result.table(
        "Decode + tensors (inference thread CPU)",
        ["path", "p50 ms", "p99 ms", "vs reference"],
        note="The per-record reference decodes every member; the previous serving code decoded "
        "newest first and stopped at T (about half the members at 400 + 400). 'history by "
        "columns' builds the history through the columns path (records.recent_history + "
        "event_batch) instead of the serving path's whole-row one (records.recent_event_batch).",
    )
    reference_decode = _median(decode_times["per-record reference"])
    before_decode = _median(decode_times["previous serving code (newest first, early stop)"])
    for name, xs in decode_times.items():
        table.add(name, _median(xs), percentile(xs, 99), f"{_median(xs) / reference_decode:.2f}x")

    before = before_read + before_decode
    after = _median(read_times[("hiredis", False, ())]) + _median(
        decode_times["serving, content cache warm"]
    )
    after_cold = _median(read_times[("hiredis", False, tuple(content_ids))]) + _median(
        decode_times["serving, content cache cold"]
    )
    result.summary = [
        f"feature path p50, before: {before:.2f} ms (python parser, WITHSCORES, the previous "
        "serving decode)",
        f"feature path p50, after: {after:.2f} ms with the content cache warm "
        f"({before / after:.1f}x less), {after_cold:.2f} ms cold ({before / after_cold:.1f}x)",
    ]
    result.summary.append(read_line)
    columns = _median(decode_times["serving, content cache warm, history by columns"])
    warm_decode = _median(decode_times["serving, content cache warm"])
    result.summary.append(
        f"decode with the content cache warm: {warm_decode:.2f} ms, {columns:.2f} ms with the "
        f"history by columns ({columns / warm_decode:.2f}x)"
    )
    body = orjson.dumps(
        {
            "user_id": "user-0",
            "context": {"surface": "feed", "device": "ios"},
            "candidates": [c.model_dump(exclude_none=True) for c in cands],
        }
    )
    bodies = body_table(result, body, args.reps)
    ref, fast, back, slept = REFERENCE, SERVING, BACK_TO_BACK, SLEPT
    result.summary.append(
        f"request body decode (N = {args.candidates}), thread CPU: msgspec "
        f"{bodies[fast, back]:.3f} ms against pydantic {bodies[ref, back]:.3f} ms back to back "
        f"({bodies[ref, back] / bodies[fast, back]:.1f}x less), {bodies[fast, slept]:.3f} "
        f"against {bodies[ref, slept]:.3f} ms after a 5 ms sleep "
        f"({bodies[ref, slept] / bodies[fast, slept]:.1f}x less)"
    )
    if not args.no_model:
        following = after_table(
            result,
            cfg,
            lambda: serving_features(cfg, members, embedding_raw, {}, cands, warm),
            args.reps,
        )
        back, stepped = following["nothing (back to back)"], following["one model step"]
        slept, spun = following["a 5 ms sleep"], following["20 ms of spinning"]
        result.summary.append(
            f"warm decode, thread CPU: {back:.2f} ms back to back, {slept:.2f} ms after a 5 ms "
            f"sleep ({slept / back:.2f}x), {stepped:.2f} ms after a model step "
            f"({stepped / back:.2f}x), {spun:.2f} ms after 20 ms of spinning on this thread "
            f"({spun / back:.2f}x, no model step)"
        )
    result.data = {
        "before_ms": before,
        "after_warm_ms": after,
        "after_cold_ms": after_cold,
    }
    result.write(args.out)


if __name__ == "__main__":
    main()
