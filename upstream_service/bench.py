"""``python -m upstream_service.bench``: encode throughput and end-to-end freshness.

1. Throughput: users/s of ``UserEncoder.encode`` (features + model + records) against batch size,
   every user with a full history of T events (T = 1,000 by default).
2. Freshness: a real worker (in this process) behind a real Kafka broker and Redis; conversions
   are published at 10, 50 and 200 per second to a pool of users with pre-seeded T-event
   histories, each stamped with its send time; freshness = embedding written - that timestamp.

Without ``--brokers``/``--redis-url`` it starts a throwaway Tansu broker and redis-server (the
test helpers in ``loadtests/stack/servers.py``). Prints a markdown table and writes it to
docs/benchmarks/upstream.md.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import platform
import random
import statistics
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch

from shared_model.checkpoint import build_model, load_checkpoint, save_checkpoint
from shared_model.config import LLaTTEConfig, upstream_config
from shared_model.contract import ActionType, UserEvent
from upstream_service.consumer import build_producer
from upstream_service.encoder import UserEncoder
from upstream_service.history_store import HistoryStore
from upstream_service.produce import publish
from upstream_service.settings import Settings
from upstream_service.worker import RefreshResult, Worker, connect_redis

log = logging.getLogger("upstream_service.bench")
DEMO_CHECKPOINT = Path("artifacts/demo/upstream")
REPORT = Path("docs/benchmarks/upstream.md")


def fallback_demo_config(history: int) -> LLaTTEConfig:
    """A demo-size upstream model (2048-d output, T events, ~2 M dense params), used until the
    trained demo checkpoint exists."""
    return upstream_config(
        max_seq_len=history,
        d_model=128,
        n_layers=3,
        n_heads=4,
        head_dim=32,
        q_lora_rank=64,
        kv_lora_rank=64,
        d_ffn=352,
        n_query=4,
        pyramid=[history, history, 0],
        readout_rank=64,
        readout_hidden=256,
        item_buckets=50_021,
        user_buckets=20_011,
        ad_buckets=5_003,
        advertiser_buckets=1_009,
    )


def model_checkpoint(history: int, scratch: Path) -> tuple[Path, str]:
    """The trained demo checkpoint when present, else a freshly initialised demo-size one."""
    if (DEMO_CHECKPOINT / "config.json").is_file():
        return DEMO_CHECKPOINT, f"trained demo checkpoint {DEMO_CHECKPOINT}"
    torch.manual_seed(0)
    cfg = fallback_demo_config(history)
    save_checkpoint(scratch, build_model(cfg), cfg)
    return scratch, (
        f"{DEMO_CHECKPOINT} does not exist yet: randomly initialised demo-size config "
        f"(d_model={cfg.d_model}, L={cfg.n_layers}, T={cfg.max_seq_len}, d_summary={cfg.d_summary})"
    )


def random_history(rng: random.Random, user: str, n: int, end_ms: int, content_dim: int) -> list:
    events = []
    for i in range(n):
        action = rng.choices(list(ActionType)[:4], weights=[40, 40, 15, 5])[0]
        content = tuple(rng.uniform(-1, 1) for _ in range(content_dim)) if content_dim else None
        events.append(
            UserEvent(
                event_id=f"seed-{user}-{i}",
                user_id=user,
                timestamp_ms=end_ms - (n - i) * 60_000,
                action_type=action,
                item_id=f"item-{rng.randrange(100_000)}",
                surface=rng.choice(["feed", "reels"]),
                content_embedding=content,
            )
        )
    return events


# --- 1. throughput ------------------------------------------------------------------------------
def bench_throughput(encoder: UserEncoder, batch_sizes: list[int], min_seconds: float) -> list:
    rng = random.Random(0)
    now = int(time.time() * 1000)
    T = encoder.history_length
    pool = [
        [e.to_history_record() for e in random_history(rng, f"u{i}", T, now, 0)]
        for i in range(max(batch_sizes))
    ]
    rows = []
    for B in batch_sizes:
        users, histories = [f"u{i}" for i in range(B)], pool[:B]
        encoder.encode(users, histories)  # warm-up
        n, began = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - began) < min_seconds or n < 2:
            encoder.encode(users, histories)
            n += 1
        elapsed = time.perf_counter() - began
        rows.append((B, B * n / elapsed, 1000 * elapsed / n))
        log.info("batch %d: %.1f users/s", B, B * n / elapsed)
    return rows


# --- 2. freshness -------------------------------------------------------------------------------
@dataclass
class FreshnessRow:
    rate: float
    sent: int
    encodes: int
    p50_s: float
    p99_s: float
    mean_batch: float
    caught_up: bool


def bench_freshness(
    settings: Settings, rates: list[float], seconds: float, pool: int, history: int
) -> list[FreshnessRow]:
    samples: list[float] = []
    results: list[RefreshResult] = []
    lock = threading.Lock()

    def on_refresh(r: RefreshResult) -> None:
        if r.written:
            with lock:
                results.append(r)
                samples.extend((r.written_at_ms - t) / 1000 for t in r.trigger_times_ms)

    client = connect_redis(settings)
    store = HistoryStore(client, {"eng": history, "imp": history})
    rng = random.Random(1)
    users = [f"bench-{uuid.uuid4().hex[:6]}-{i}" for i in range(pool)]
    past = int(time.time() * 1000) - 60_000
    log.info("seeding %d users with %d-event histories", pool, history)
    for u in users:
        store.append(random_history(rng, u, history, past, 0))

    worker = Worker(settings, on_refresh=on_refresh)
    thread = threading.Thread(target=worker.run, name="bench-worker", daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not worker.ready():
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the worker did not become ready")
        time.sleep(0.1)
    producer = build_producer(settings)
    rows = []
    try:
        for rate in rates:
            with lock:
                samples.clear()
                results.clear()
            n = int(rate * seconds)
            events = (
                UserEvent(
                    event_id=f"conv-{uuid.uuid4().hex}",
                    user_id=rng.choice(users),
                    timestamp_ms=int(time.time() * 1000),  # re-stamped at send time
                    action_type=ActionType.CONVERSION,
                    item_id=f"ad-{rng.randrange(1000)}",
                )
                for _ in range(n)
            )
            log.info("publishing %d conversions at %.0f/s", n, rate)
            publish(
                producer, settings.events_topic, events, rate=rate, restamp=True, progress=False
            )
            drain_until = time.monotonic() + max(60.0, seconds * 3)
            while time.monotonic() < drain_until:
                with lock:
                    if len(samples) >= n:
                        break
                time.sleep(0.2)
            with lock:
                got, encodes = sorted(samples), list(results)
            if not got:
                raise RuntimeError(f"no refresh finished at {rate}/s")
            rows.append(
                FreshnessRow(
                    rate=rate,
                    sent=n,
                    encodes=len(encodes),
                    p50_s=statistics.median(got),
                    p99_s=got[min(len(got) - 1, int(0.99 * len(got)))],
                    mean_batch=worker.metrics.value("upstream_encode_batch_size_sum")
                    / max(1.0, worker.metrics.value("upstream_encode_batch_size_count")),
                    caught_up=len(got) >= n,
                )
            )
            log.info("rate %.0f/s: %s", rate, rows[-1])
    finally:
        producer.close(timeout=5)
        worker.stop()
        thread.join(60)
        client.close()
    return rows


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    cores = len(__import__("os").sched_getaffinity(0))
    return (
        f"{cpu}, {cores} cores usable, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def render(command: str, model_note: str, history: int, throughput: list, fresh: list,
           settings: Settings, seconds: float, pool: int) -> str:  # fmt: skip
    lines = [
        "# Upstream worker benchmark",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {machine()}; device {settings.device}.",
        "",
        f"Model: {model_note}.",
        "",
        f"## Encode throughput (T = {history}, features + model + records, float32)",
        "",
        "| batch size | users/s | ms/batch |",
        "|---:|---:|---:|",
        *(f"| {b} | {u:.1f} | {ms:.0f} |" for b, u, ms in throughput),
    ]
    if fresh:
        lines += [
            "",
            f"## Freshness (conversion timestamp -> embedding written), {seconds:.0f} s per rate,",
            f"{pool} users with {history}-event histories, batch max "
            f"{settings.batch_max_size} / wait {settings.batch_max_wait_ms} ms",
            "",
            "| conversions/s | sent | encodes | mean batch | p50 s | p99 s | caught up |",
            "|---:|---:|---:|---:|---:|---:|:---:|",
            *(
                f"| {r.rate:.0f} | {r.sent} | {r.encodes} | {r.mean_batch:.1f} | "
                f"{r.p50_s:.2f} | {r.p99_s:.2f} | {'yes' if r.caught_up else 'no'} |"
                for r in fresh
            ),
            "",
            "Encodes < sent means triggers were coalesced: a user converting again while waiting",
            "is refreshed once. 'caught up' = every conversion was covered by a written embedding",
            "before the drain deadline; when the encoder is slower than the trigger rate, the",
            "pending set grows until coalescing bounds it (at most one pending refresh per user).",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--history", type=int, default=1000, help="T events per user")
    p.add_argument("--batch-sizes", default="1,2,4,8,16,32")
    p.add_argument("--min-seconds", type=float, default=3.0, help="per batch size")
    p.add_argument("--rates", default="10,50,200", help="conversions per second")
    p.add_argument("--seconds", type=float, default=20.0, help="publishing time per rate")
    p.add_argument("--pool", type=int, default=500, help="users receiving conversions")
    p.add_argument("--batch-max-size", type=int, default=32)
    p.add_argument("--batch-max-wait-ms", type=int, default=50)
    p.add_argument("--brokers", help="an existing Kafka (default: start a Tansu broker)")
    p.add_argument("--redis-url", help="an existing Redis (default: start a redis-server)")
    p.add_argument("--skip-freshness", action="store_true")
    p.add_argument("--out", type=Path, default=REPORT)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    command = "python -m upstream_service.bench " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )

    with contextlib.ExitStack() as stack:
        scratch = Path(stack.enter_context(__import__("tempfile").TemporaryDirectory()))
        ckpt_path, model_note = model_checkpoint(args.history, scratch / "upstream")
        ckpt = load_checkpoint(ckpt_path, stage="upstream")
        T = min(args.history, ckpt.config.max_seq_len)
        encoder = UserEncoder(ckpt.model, ckpt.config, ckpt.model_version, history_length=T)
        print(f"model: {model_note}", flush=True)
        sizes = [int(b) for b in args.batch_sizes.split(",")]
        throughput = bench_throughput(encoder, sizes, args.min_seconds)

        fresh: list[FreshnessRow] = []
        settings = Settings(
            checkpoint_path=ckpt_path,
            history_length=T,
            batch_max_size=args.batch_max_size,
            batch_max_wait_ms=args.batch_max_wait_ms,
            metrics_port=-1,
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
            max_poll_interval_ms=60_000,
            events_topic=f"bench-events-{uuid.uuid4().hex[:8]}",
            group_id=f"bench-{uuid.uuid4().hex[:8]}",
        )
        if not args.skip_freshness:
            brokers, redis_url = args.brokers, args.redis_url
            if brokers is None or redis_url is None:
                from loadtests.stack.servers import KafkaBroker, RedisServer

                if brokers is None:
                    broker = stack.enter_context(KafkaBroker())
                    broker.create_topic(settings.events_topic, partitions=4)
                    brokers = broker.bootstrap
                if redis_url is None:
                    redis_url = stack.enter_context(RedisServer()).url
            settings = settings.model_copy(
                update={"kafka_bootstrap_servers": brokers, "redis_url": redis_url}
            )
            rates = [float(r) for r in args.rates.split(",")]
            fresh = bench_freshness(settings, rates, args.seconds, args.pool, T)

    report = render(command, model_note, T, throughput, fresh, settings, args.seconds, args.pool)
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
