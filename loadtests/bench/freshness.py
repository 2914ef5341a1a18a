"""``python -m loadtests.bench.freshness``: event -> readable embedding under load.

A real upstream worker (in this process) behind a real Kafka broker and redis-server. Users of
a pool have pre-seeded histories of T events; events are published at each rate in turn, a
share of them conversions (the trigger) and the rest views and clicks, each stamped with its
send time. Freshness = the embedding written to Redis - the conversion's stamp, one sample per
conversion. The worker runs with its defaults: adaptive batching (users that queued while the
encoder was busy go out at once, up to the batch maximum; the wait applies only while the
encoder is idle) and length-aware encoding.

Model: the trained demo checkpoint (``artifacts/demo/upstream``) when present, else the demo
config (``shared_model/configs/demo_upstream.json``) with random weights: freshness depends on
the model's shapes, not on its weights. Without ``--kafka``/``--redis-url`` it starts a
throwaway Tansu broker and redis-server (``loadtests.stack.servers``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import random
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from loadtests.bench.common import REPO_ROOT, Result, command_line, percentile
from loadtests.stack.checkpoints import random_checkpoint
from loadtests.stack.polling import wait_for
from shared_model.config import LLaTTEConfig
from shared_model.contract import ActionType, UserEvent
from upstream_service.consumer import build_producer
from upstream_service.history_store import HistoryStore
from upstream_service.produce import publish
from upstream_service.settings import Settings
from upstream_service.worker import RefreshResult, Worker, connect_redis

log = logging.getLogger("loadtests.bench.freshness")
DEMO_CHECKPOINT = REPO_ROOT / "artifacts" / "demo" / "upstream"
DEMO_CONFIG = REPO_ROOT / "shared_model" / "configs" / "demo_upstream.json"


@dataclass
class Step:
    rate: float  # events per second
    sent: int
    conversions: int
    encodes: int
    mean_batch: float
    p50_s: float
    p99_s: float
    max_s: float
    caught_up: bool  # every conversion covered by a written embedding before the deadline


def demo_checkpoint(scratch: Path) -> tuple[Path, str]:
    if (DEMO_CHECKPOINT / "config.json").is_file():
        return DEMO_CHECKPOINT, f"trained demo checkpoint {DEMO_CHECKPOINT.relative_to(REPO_ROOT)}"
    version = random_checkpoint(scratch, LLaTTEConfig.from_json(DEMO_CONFIG), seed=0)
    return scratch, f"{DEMO_CONFIG.name} with random weights ({version})"


def seeded_history(rng: random.Random, user: str, n: int, end_ms: int, content_dim: int) -> list:
    return [
        UserEvent(
            event_id=f"seed-{user}-{i}",
            user_id=user,
            timestamp_ms=end_ms - (n - i) * 60_000,
            action_type=rng.choices(list(ActionType)[:4], weights=[40, 40, 15, 5])[0],
            item_id=f"item-{rng.randrange(100_000)}",
            surface=rng.choice(["feed", "reels"]),
            content_embedding=tuple(rng.uniform(-1, 1) for _ in range(content_dim))
            if content_dim
            else None,
        )
        for i in range(n)
    ]


def traffic(rng: random.Random, users: list[str], n: int, conversion_share: float):
    """n events of random pool users; about ``conversion_share`` of them conversions."""
    for _ in range(n):
        conversion = rng.random() < conversion_share
        yield UserEvent(
            event_id=f"ev-{uuid.uuid4().hex}",
            user_id=rng.choice(users),
            timestamp_ms=int(time.time() * 1000),  # re-stamped at send time
            action_type=ActionType.CONVERSION
            if conversion
            else rng.choice([ActionType.VIEW, ActionType.CLICK]),
            item_id=f"ad-{rng.randrange(1000)}",
        )


def run(settings: Settings, args: argparse.Namespace, content_dim: int) -> list[Step]:
    samples: list[float] = []
    encodes = [0]
    lock = threading.Lock()

    def on_refresh(r: RefreshResult) -> None:
        if r.written:
            with lock:
                encodes[0] += 1
                samples.extend((r.written_at_ms - t) / 1000 for t in r.trigger_times_ms)

    client = connect_redis(settings)
    T = settings.history_length
    store = HistoryStore(client, {"eng": T, "imp": T})
    rng = random.Random(1)
    users = [f"fresh-{uuid.uuid4().hex[:6]}-{i}" for i in range(args.pool)]
    past = int(time.time() * 1000) - 3_600_000
    log.info("seeding %d users with %d-event histories", args.pool, T)
    for u in users:
        store.append(seeded_history(rng, u, T, past, content_dim))

    worker = Worker(settings, on_refresh=on_refresh)
    thread = threading.Thread(target=worker.run, name="bench-worker", daemon=True)
    thread.start()
    wait_for(lambda: worker.ready() or not thread.is_alive(), 120, "the worker to join")
    if not thread.is_alive():
        raise RuntimeError("the worker stopped before it was ready")
    producer = build_producer(settings)
    steps = []
    try:
        for rate in [float(r) for r in args.rates.split(",")]:
            with lock:
                samples.clear()
                encodes[0] = 0
            batches_before = worker.metrics.value("upstream_encode_batch_size_count")
            users_before = worker.metrics.value("upstream_encode_batch_size_sum")
            events = list(traffic(rng, users, int(rate * args.seconds), args.conversion_share))
            conversions = sum(e.action_type is ActionType.CONVERSION for e in events)
            log.info(
                "publishing %d events (%d conversions) at %.0f/s", len(events), conversions, rate
            )
            publish(
                producer, settings.events_topic, events, rate=rate, restamp=True, progress=False
            )
            producer.flush()

            def covered(n: int = conversions) -> bool:
                with lock:
                    return len(samples) >= n

            with contextlib.suppress(TimeoutError):
                wait_for(covered, max(60.0, 3 * args.seconds), "every conversion's embedding")
            with lock:
                got, n_encodes = list(samples), encodes[0]
            batches = worker.metrics.value("upstream_encode_batch_size_count") - batches_before
            batched = worker.metrics.value("upstream_encode_batch_size_sum") - users_before
            steps.append(
                Step(
                    rate=rate,
                    sent=len(events),
                    conversions=conversions,
                    encodes=n_encodes,
                    mean_batch=batched / max(1.0, batches),
                    p50_s=percentile(got, 50),
                    p99_s=percentile(got, 99),
                    max_s=max(got, default=float("nan")),
                    caught_up=len(got) >= conversions,
                )
            )
            log.info("%.0f events/s: %s", rate, steps[-1])
    finally:
        producer.close(timeout=5)
        worker.stop()
        thread.join(60)
        client.close()
    return steps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rates", default="10,50,200", help="events per second, in turn")
    p.add_argument("--conversion-share", type=float, default=0.1, help="share of conversions")
    p.add_argument("--seconds", type=float, default=20.0, help="publishing time per rate")
    p.add_argument("--pool", type=int, default=500, help="users receiving events")
    p.add_argument("--history-length", type=int, help="T seeded events (default: the model's)")
    p.add_argument("--batch-max-size", type=int, default=32)
    p.add_argument("--batch-max-wait-ms", type=int, default=50)
    p.add_argument("--kafka", help="an existing Kafka (default: start a Tansu broker)")
    p.add_argument("--topic", help="with --kafka: an existing, preferably empty, events topic")
    p.add_argument("--redis-url", help="an existing Redis (default: start a redis-server)")
    p.add_argument("--out", type=Path, default=None, help="result JSON")
    args = p.parse_args(argv)
    if args.kafka and not args.topic:
        p.error("--kafka needs --topic")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    command = command_line("loadtests.bench.freshness", argv if argv is not None else sys.argv[1:])

    with contextlib.ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        ckpt_path, model_note = demo_checkpoint(scratch / "upstream")
        cfg = _checkpoint_config(ckpt_path)
        T = min(args.history_length or cfg.max_seq_len, cfg.max_seq_len)
        settings = Settings(
            checkpoint_path=ckpt_path,
            device="cpu",
            history_length=T,
            batch_max_size=args.batch_max_size,
            batch_max_wait_ms=args.batch_max_wait_ms,
            metrics_port=-1,
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
            max_poll_interval_ms=60_000,
            events_topic=args.topic or f"fresh-events-{uuid.uuid4().hex[:8]}",
            group_id=f"fresh-{uuid.uuid4().hex[:8]}",
        )
        kafka, redis_url = args.kafka, args.redis_url
        if kafka is None or redis_url is None:
            from loadtests.stack.servers import KafkaBroker, RedisServer

            if kafka is None:
                broker = stack.enter_context(KafkaBroker())
                broker.create_topic(settings.events_topic, partitions=4)
                kafka = broker.bootstrap
            if redis_url is None:
                redis_url = stack.enter_context(RedisServer()).url
        settings = settings.model_copy(
            update={"kafka_bootstrap_servers": kafka, "redis_url": redis_url}
        )
        result = Result(
            "freshness",
            "Freshness: event -> embedding readable, under load",
            command,
            description=__doc__.split("\n\n", 1)[1].strip(),
        )
        steps = run(settings, args, cfg.content_dim)

    table = result.table(
        f"{model_note}; T = {T}, {args.pool} users, {args.seconds:g} s per rate, "
        f"{100 * args.conversion_share:g}% conversions; batch max {args.batch_max_size}, "
        f"wait {args.batch_max_wait_ms} ms (adaptive)",
        [
            "events/s",
            "sent",
            "conversions",
            "encodes",
            "mean batch",
            "p50 s",
            "p99 s",
            "max s",
            "caught up",
        ],
        note="Encodes < conversions means triggers were coalesced: a user converting again "
        "while queued is refreshed once. 'caught up': every conversion was covered by a "
        "written embedding before the drain deadline.",
    )
    for s in steps:
        table.add(s.rate, s.sent, s.conversions, s.encodes, s.mean_batch, s.p50_s, s.p99_s,
                  s.max_s, "yes" if s.caught_up else "no")  # fmt: skip
    result.summary = [f"p99 at {s.rate:g} events/s: {s.p99_s:.2f} s" for s in steps]
    result.data = {"steps": [vars(s) for s in steps], "history_length": T, "model": model_note}
    result.write(args.out)
    return 0


def _checkpoint_config(path: Path) -> LLaTTEConfig:
    return LLaTTEConfig.from_dict(json.loads((path / "config.json").read_text())["config"])


if __name__ == "__main__":
    sys.exit(main())
