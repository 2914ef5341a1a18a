"""A simulated upstream rollout under ranking traffic: coverage, backfill rate, event freshness.

Real redis-server and Tansu broker (``loadtests.stack.servers``), two real upstream workers in
this process (``upstream_service.worker.Worker``): A (the current model) and B (the new one,
deployed beside A in its own consumer group), tiny random checkpoints. Ranking traffic is the
ranker's own read and embedding decision (``ranker_service.store.FeatureStore.fetch`` with the
ranker's trained upstream version, then ``features.decide_embedding``), without the model's
scoring, which does not decide whether the upstream embedding is used. Conversions of random
users arrive throughout at ``--event-rate``; both workers encode them.

Phases: histories seeded for ``--users`` users and A backfilled for them; rankers read A
("before"); B deployed, conversions only ("B, no backfill"); ``upstream_service.backfill`` for
B at ``--rate`` until B covers every user ("B, backfill"); rankers switched to B ("after").
Printed: the share of ranking requests that used an upstream embedding per phase and its
minimum over 1 s windows, the backfill rate vs B's event-triggered encode rate in the backfill
phase, and B's event-triggered freshness p99 without vs during the backfill.

``python -m loadtests.bench.rollout [--users 2000 --rate 400 --event-rate 20]``
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import random
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from loadtests.bench.common import Result, command_line, percentile
from loadtests.stack.checkpoints import random_checkpoint
from loadtests.stack.polling import wait_for
from loadtests.stack.servers import FAST_GROUP_CONSUMER, KafkaBroker, RedisServer
from ranker_service.features import decide_embedding
from ranker_service.settings import Settings as RankerSettings
from ranker_service.store import FeatureStore
from shared_model.config import tiny_config
from shared_model.contract import UserEvent
from upstream_service.backfill import run_backfill
from upstream_service.consumer import build_producer
from upstream_service.history_store import HistoryStore
from upstream_service.settings import Settings
from upstream_service.worker import RefreshResult, Worker

EVENTS_PER_USER = 8


class Recorder:
    """Refreshes of one worker: users covered, and event-triggered freshness samples."""

    def __init__(self, sent: set[tuple[str, int]]) -> None:
        # (user, event timestamp_ms) of every conversion published: a backfill request's
        # requested_at_ms can equal some conversion's timestamp, never for the same user too.
        self.sent = sent
        self.users: set[str] = set()
        self.event_refreshes: list[tuple[float, float]] = []  # (event time, freshness s)
        self.lock = threading.Lock()

    def __call__(self, r: RefreshResult) -> None:
        with self.lock:
            if r.written:
                self.users.add(r.user_id)
            for ts in r.trigger_times_ms:
                if (r.user_id, ts) in self.sent:
                    self.event_refreshes.append((ts / 1000, (r.written_at_ms - ts) / 1000))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--rate", type=float, default=400.0, help="backfill users/s")
    p.add_argument("--event-rate", type=float, default=20.0, help="conversions/s")
    p.add_argument("--phase-s", type=float, default=8.0, help="length of the fixed phases")
    p.add_argument("--backfill-per-batch", type=int, default=8, help="worker setting")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    result = Result(
        "rollout",
        "Upstream rollout under ranking traffic",
        command_line("loadtests.bench.rollout", sys.argv[1:] if argv is None else argv),
        description=__doc__,
    )
    rng = random.Random(0)
    users = [f"user-{i}" for i in range(args.users)]
    with (
        tempfile.TemporaryDirectory() as tmp,
        RedisServer() as redis_server,
        KafkaBroker() as kafka,
    ):
        root = Path(tmp)
        version_a = random_checkpoint(root / "a", tiny_config("upstream"), seed=0)
        version_b = random_checkpoint(root / "b", tiny_config("upstream"), seed=1)
        topic = f"events-{uuid.uuid4().hex[:6]}"
        for name, n in ((topic, 4), (f"{topic}-dlq", 1), (f"{topic}-refresh", 4)):
            kafka.create_topic(name, partitions=n)
        base = Settings(
            kafka_bootstrap_servers=kafka.bootstrap,
            events_topic=topic,
            dead_letter_topic=f"{topic}-dlq",
            refresh_topic=f"{topic}-refresh",
            redis_url=redis_server.url,
            metrics_port=-1,
            batch_max_size=32,
            batch_max_wait_ms=20,
            torch_threads=1,
            backfill_max_per_batch=args.backfill_per_batch,
            **FAST_GROUP_CONSUMER,
        )
        client = redis_server.client()
        # Histories, straight into Redis (no trigger).
        now = int(time.time() * 1000) - 3_600_000
        history = HistoryStore(client, {"eng": 2000, "imp": 2000})
        seed = [
            UserEvent(f"seed-{u}-{k}", u, now + k, "click", f"item-{rng.randrange(500)}")
            for u in users
            for k in range(EVENTS_PER_USER)
        ]
        for i in range(0, len(seed), 2000):
            history.append(seed[i : i + 2000])
        sent: set[tuple[str, int]] = set()
        rec_a, rec_b = Recorder(sent), Recorder(sent)
        worker_a = Worker(
            base.model_copy(update={"group_id": "up-a", "checkpoint_path": root / "a"}),
            on_refresh=rec_a,
        )
        worker_b = Worker(
            base.model_copy(update={"group_id": "up-b", "checkpoint_path": root / "b"}),
            on_refresh=rec_b,
        )
        threads = [threading.Thread(target=w.run, daemon=True) for w in (worker_a, worker_b)]
        threads[0].start()
        wait_for(worker_a.ready, 60, "worker A to join")
        run_backfill(base, version_a, client=client, show_progress=False)
        wait_for(lambda: len(rec_a.users) >= args.users, 300, "A to cover every user")
        print(f"A covers {len(rec_a.users)} users", flush=True)

        stop = threading.Event()
        ranker_version = [version_a]
        samples: list[tuple[float, bool]] = []  # (time, used the upstream embedding)
        cfg = tiny_config("online")

        async def ranking() -> None:
            store = FeatureStore(RankerSettings(redis_url=redis_server.url, redis_budget_ms=1000))
            while not stop.is_set():
                user = rng.choice(users)
                data = await store.fetch(
                    user,
                    history_limit=cfg.max_seq_len,
                    read_embedding=True,
                    read_history=True,
                    embedding_version=ranker_version[0],
                )
                t = time.time()
                d = decide_embedding(
                    data.embedding, data.outcome, cfg, ranker_version[0], int(t * 1000), 10**9
                )
                samples.append((t, d.used))
                await asyncio.sleep(0.002)
            await store.aclose()

        def conversions() -> None:
            producer = build_producer(base)
            k = 0
            while not stop.is_set():
                user, ts = rng.choice(users), int(time.time() * 1000)
                sent.add((user, ts))
                e = UserEvent(f"conv-{k}", user, ts, "conversion", "ad-1")
                producer.send(topic, key=e.kafka_key(), value=e.encode())
                k += 1
                stop.wait(1 / args.event_rate)
            producer.close(timeout=5)

        load = [
            threading.Thread(target=lambda: asyncio.run(ranking()), daemon=True),
            threading.Thread(target=conversions, daemon=True),
        ]
        for t in load:
            t.start()
        marks = {"before": time.time()}
        time.sleep(args.phase_s)
        threads[1].start()
        wait_for(worker_b.ready, 60, "worker B to join")
        marks["B, no backfill"] = time.time()
        time.sleep(args.phase_s)
        marks["B, backfill"] = time.time()
        run_backfill(base, version_b, rate=args.rate, client=client, show_progress=False)
        wait_for(lambda: len(rec_b.users) >= args.users, 600, "B to cover every user")
        marks["after"] = time.time()
        backfill_s = marks["after"] - marks["B, backfill"]
        ranker_version[0] = version_b
        time.sleep(args.phase_s)
        marks["end"] = time.time()
        stop.set()
        for t in load:
            t.join(10)
        for w in (worker_a, worker_b):
            w.stop()
        for t in threads:
            t.join(30)

    phases = list(marks)
    share_table = result.table(
        "Share of ranking requests that used an upstream embedding",
        ["phase", "ranker reads", "requests", "share", "min 1 s window"],
    )
    shares = {}
    for name, end in itertools.pairwise(phases):
        lo, hi = marks[name], marks[end]
        used = [u for t, u in samples if lo <= t < hi]
        windows = {}
        for t, u in samples:
            if lo <= t < hi:
                windows.setdefault(int(t - lo), []).append(u)
        mins = [sum(w) / len(w) for w in windows.values() if len(w) >= 20]
        shares[name] = (sum(used) / max(1, len(used)), min(mins) if mins else float("nan"))
        reads = "A" if name != "after" else "B"
        share_table.add(name, reads, len(used), f"{shares[name][0]:.1%}", f"{shares[name][1]:.1%}")
    before = shares["before"][0]
    min_share = min(s[1] for s in shares.values())

    def fresh(lo: float, hi: float) -> list[float]:
        return [f for t, f in rec_b.event_refreshes if lo <= t < hi]

    quiet = fresh(marks["B, no backfill"], marks["B, backfill"])
    during = fresh(marks["B, backfill"], marks["after"])
    p99_quiet, p99_during = percentile(quiet, 99), percentile(during, 99)
    backfill_rate = args.users / backfill_s
    event_rate = len(during) / backfill_s
    rates = result.table("Worker B during the backfill", ["measure", "value"])
    rates.add("backfill users/s (all users covered / backfill time)", f"{backfill_rate:.1f}")
    rates.add("event-triggered encodes/s (same period)", f"{event_rate:.1f}")
    rates.add("event freshness p99 without backfill (s)", f"{p99_quiet:.3f} (n={len(quiet)})")
    rates.add("event freshness p99 during backfill (s)", f"{p99_during:.3f} (n={len(during)})")
    result.summary += [
        f"minimum share (1 s windows) {min_share:.1%} vs {before:.1%} before the rollout "
        f"({min_share / before:.2f}x; goal >= 0.90x)",
        f"backfill {backfill_rate:.1f} users/s vs {event_rate:.1f} event-triggered encodes/s",
        f"event freshness p99 during/without backfill: {p99_during / p99_quiet:.2f}x "
        f"({p99_during:.3f} s vs {p99_quiet:.3f} s; goal <= 1.5x)",
    ]
    result.data = {
        "marks": marks,
        "shares": shares,
        "backfill_users_per_s": backfill_rate,
        "event_encodes_per_s": event_rate,
        "freshness_p99_s": [p99_quiet, p99_during],
        "args": vars(args),
    }
    result.write()


if __name__ == "__main__":
    main()
