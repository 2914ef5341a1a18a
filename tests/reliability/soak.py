"""Sustained load on the real stack: ``python -m tests.reliability.soak --minutes 3``.

Starts Tansu, redis-server, the upstream worker and the ranker (tiny seeded checkpoints in a
scratch directory, so the soak measures the serving machinery, not model FLOPs), runs Locust
headless with ``soak_locustfile.py`` (ranking mixed with Kafka event publishing), samples each
service's RSS every few seconds, and then checks that every acknowledged conversion reached an
embedding. Writes the figures between the soak markers of ``docs/reliability.md`` and exits
non-zero on any 5xx, any lost conversion, or RSS growth over the bound.

A script, not a test: timings belong in benchmarks, and CI time is limited.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import logging
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from loadtests.stack.checkpoints import checkpoint_pair
from loadtests.stack.servers import REPO_ROOT, KafkaBroker, RedisServer
from shared_model.config import tiny_config
from tests.reliability.conftest import (
    RankerProcess,
    UpstreamProcess,
    metric,
    newest_seen,
    ranker_env,
    upstream_env,
)

log = logging.getLogger("soak")
DOC = REPO_ROOT / "docs" / "reliability.md"
BEGIN, END = "<!-- soak:begin -->", "<!-- soak:end -->"
LOCUSTFILE = Path(__file__).with_name("soak_locustfile.py")


@dataclass
class RssSeries:
    """RSS samples (MiB) of one process; growth is measured from the end of the warm-up."""

    samples: list[tuple[float, float]] = field(default_factory=list)  # (seconds, MiB)

    def after(self, warmup_s: float) -> list[float]:
        return [mib for t, mib in self.samples if t >= warmup_s] or [m for _, m in self.samples]

    def summary(self, warmup_s: float) -> tuple[float, float, float]:
        steady = self.after(warmup_s)
        return steady[0], steady[-1], max(m for _, m in self.samples)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def sample_rss(pids: dict[str, int], every_s: float, stop: threading.Event) -> dict[str, RssSeries]:
    series = {name: RssSeries() for name in pids}
    began = time.monotonic()

    def run() -> None:
        while not stop.is_set():
            for name, pid in pids.items():
                with contextlib.suppress(OSError, RuntimeError):
                    series[name].samples.append((time.monotonic() - began, rss_mib(pid)))
            stop.wait(every_s)

    threading.Thread(target=run, name="rss-sampler", daemon=True).start()
    return series


def make_checkpoints(root: Path) -> tuple[Path, Path]:
    pair = checkpoint_pair(root)
    return pair.upstream, pair.online


def read_locust_stats(prefix: Path) -> dict[str, dict[str, str]]:
    with open(f"{prefix}_stats.csv") as f:
        return {row["Name"]: row for row in csv.DictReader(f)}


def write_report(text: str) -> None:
    doc = DOC.read_text() if DOC.exists() else f"# Reliability\n\n{BEGIN}\n{END}\n"
    if BEGIN not in doc:
        doc += f"\n{BEGIN}\n{END}\n"
    head, rest = doc.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    DOC.write_text(f"{head}{BEGIN}\n{text.rstrip()}\n{END}{tail}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--users", type=int, default=8, help="Locust users (4 req/s each)")
    parser.add_argument("--warmup-s", type=float, default=30.0, help="RSS growth measured after")
    parser.add_argument("--rss-bound-mib", type=float, default=64.0, help="max growth/service")
    parser.add_argument("--no-write", action="store_true", help="do not update the doc")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.CRITICAL)

    scratch = Path(tempfile.mkdtemp(prefix="llatte-soak-"))
    upstream_ckpt, online_ckpt = make_checkpoints(scratch)
    conversions_file = scratch / "conversions.txt"
    conversions_file.touch()
    cfg = tiny_config("online")
    with KafkaBroker() as broker, RedisServer() as redis_server:
        topic = "soak-events"
        broker.create_topic(topic, partitions=4)
        broker.create_topic(f"{topic}-dlq", partitions=1)
        worker = UpstreamProcess(
            upstream_env(
                bootstrap=broker.bootstrap,
                redis_url=redis_server.url,
                topic=topic,
                checkpoint=upstream_ckpt,
            ),
            name="soak-upstream",
        )
        ranker = RankerProcess(
            ranker_env(redis_server.url, online_ckpt, redis_budget_ms="50"), name="soak-ranker"
        )
        with worker, ranker:
            worker.wait_worker_ready()
            ranker.wait_ready(f"{ranker.base}/readyz", timeout=60)
            stop = threading.Event()
            rss = sample_rss({"ranker": ranker.pid, "upstream": worker.pid}, 5.0, stop)
            prefix = scratch / "locust"
            env = {
                **os.environ,
                "SOAK_TOPIC": topic,
                "SOAK_BOOTSTRAP": broker.bootstrap,
                "SOAK_CONVERSIONS": str(conversions_file),
                "SOAK_CONTENT_DIM": str(cfg.content_dim),
                "SOAK_N_FLOATS": str(cfg.n_candidate_floats),
                "PYTHONPATH": str(REPO_ROOT),
            }
            run_s = int(args.minutes * 60)
            log.info("locust: %d users for %ds against %s", args.users, run_s, ranker.base)
            began = time.monotonic()
            locust = subprocess.run(
                [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
                 "-u", str(args.users), "-r", str(args.users), "-t", f"{run_s}s",
                 "--host", ranker.base, "--csv", str(prefix), "--only-summary",
                 "--loglevel", "WARNING", "--exit-code-on-error", "0"],
                env=env, cwd=REPO_ROOT, capture_output=True, text=True,
            )  # fmt: skip
            elapsed = time.monotonic() - began
            stop.set()
            if locust.returncode not in (0, 1):
                log.error("locust failed:\n%s", locust.stderr[-4000:])
                return 2
            stats = read_locust_stats(prefix)
            ranker_metrics = ranker.metrics()
            server_errors = metric(
                ranker_metrics, "ranker_request_duration_seconds_count", {"outcome": "server_error"}
            )
            lookups = {
                o: metric(ranker_metrics, "ranker_embedding_lookups_total", {"outcome": o})
                for o in ("hit", "missing", "timeout", "unavailable", "corrupt")
            }
            # Nothing lost: every acknowledged conversion reaches an embedding that saw it.
            expected: dict[str, int] = {}
            pairs = conversions_file.read_text().split()
            for user, ts in zip(pairs[::2], pairs[1::2], strict=True):
                expected[user] = max(expected.get(user, 0), int(ts))
            client = redis.Redis.from_url(redis_server.url)
            deadline = time.monotonic() + 90
            missing = dict(expected)
            while missing and time.monotonic() < deadline:
                missing = {u: t for u, t in missing.items() if newest_seen(client, u) < t}
                time.sleep(0.5)
            worker_metrics = worker.metrics()
            invalid = metric(worker_metrics, "upstream_events_invalid_total")
            consumed = metric(worker_metrics, "upstream_events_consumed_total")
            assert worker.running and ranker.running, "a service died during the soak"

    rank_row, kafka_row = stats["/v1/rank"], stats.get("publish user events", {})
    requests = int(rank_row["Request Count"])
    failures = int(rank_row["Failure Count"])
    ok_rss = True
    rss_rows = []
    for name, series in rss.items():
        start, end, peak = series.summary(args.warmup_s)
        growth = end - start
        ok_rss &= growth <= args.rss_bound_mib
        rss_rows.append(
            f"| {name} | {start:.0f} | {end:.0f} | {peak:.0f} | {growth:+.1f} | "
            f"{len(series.samples)} |"
        )
    passed = server_errors == 0 and failures == 0 and not missing and ok_rss
    load_rows = [
        ("duration", f"{elapsed:.0f} s"),
        ("`/v1/rank` requests", f"{requests} ({requests / elapsed:.1f}/s)"),
        ("`/v1/rank` failures (non-200)", f"{failures}"),
        ('ranker 5xx (`ranker_request_duration_seconds_count{outcome="server_error"}`)',
         f"{server_errors:.0f}"),
        ("`/v1/rank` latency P50 / P95 / P99 (client side, ms)",
         f"{rank_row['50%']} / {rank_row['95%']} / {rank_row['99%']}"),
        ("Kafka publishes (batches of 1-4 events) / failures",
         f"{kafka_row.get('Request Count', 0)} / {kafka_row.get('Failure Count', 0)}"),
        ("events consumed by the worker / dead-lettered", f"{consumed:.0f} / {invalid:.0f}"),
        ("users with an acknowledged conversion / embeddings that saw it",
         f"{len(expected)} / {len(expected) - len(missing)}"),
        ("embedding lookups: hit / missing / timeout / unavailable / corrupt",
         " / ".join(f"{v:.0f}" for v in lookups.values())),
    ]  # fmt: skip
    verdict = "PASS" if passed else "FAIL"
    report = "\n".join(
        [
            f"### Soak run ({time.strftime('%Y-%m-%d')}, {args.minutes:g} min)",
            "",
            f"`python -m tests.reliability.soak --minutes {args.minutes:g} --users {args.users}`"
            f" on {platform.machine()} with {os.cpu_count()} CPUs (shared), Python "
            f"{platform.python_version()}, tiny seeded checkpoints; Tansu, redis-server, "
            "`python -m upstream_service` and `uvicorn ranker_service.main:app` as real "
            f"processes; Locust {args.users} users at up to 4 requests/s each, 5:1 ranking "
            "(5-50 candidates) to Kafka publishing (30% of publishes end with a conversion). "
            f"Verdict: **{verdict}**.",
            "",
            "| load | figure |",
            "|---|---:|",
            *(f"| {k} | {v} |" for k, v in load_rows),
            "",
            f"| service | RSS after {args.warmup_s:.0f} s warm-up (MiB) | RSS at end | max | "
            "growth | samples |",
            "|---|---:|---:|---:|---:|---:|",
            *rss_rows,
            "",
            f"Bound: RSS growth after the warm-up at most {args.rss_bound_mib:.0f} MiB per "
            "service; zero 5xx; zero lost conversions.",
        ]
    )
    sys.stdout.write(report + "\n")
    if not args.no_write:
        write_report(report)
        log.info("wrote %s", DOC)
    if missing:
        log.error("%d conversions never reached an embedding: %s", len(missing), list(missing)[:5])
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
