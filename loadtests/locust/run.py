"""``python -m loadtests.locust.run`` (``make loadtest``): a headless Locust run, summary, SLO.

    python -m loadtests.locust.run --host http://127.0.0.1:8000 --rate 10 --duration 60s \\
        --arrival poisson --slo-p99-ms 50 --slo-error-rate 0.01 \\
        --kafka-bootstrap 127.0.0.1:9092 --event-rate 50

Runs ``loadtests/locust/locustfile.py`` against a running ranker (the compose stack's, the demo's,
or one this command starts with ``--start-ranker``: redis-server + the ranker, Redis seeded with
the load-test population). Writes Locust's CSVs (``locust_stats.csv``, ``..._history.csv``,
``..._failures.csv``) and HTML report into ``--run-dir`` plus ``summary.json``, and prints
P50/P95/P99, throughput and error rate of ``POST /v1/rank``.

Exit status: 0, or 1 when an SLO bound (``--slo-p99-ms``, ``--slo-error-rate``) is passed, or 2
when Locust produced no statistics. Unknown options are passed to the locustfile (e.g.
``--min-candidates 100 --max-candidates 100``, ``--inline-share 0``).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from loadtests.locust.traffic import KAFKA_NAME, RANK_NAME

log = logging.getLogger("loadtests.locust.run")

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"


@dataclass
class Summary:
    requests: int
    failures: int
    error_rate: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    throughput_rps: float
    late_share: float = 0.0  # arrivals sent late because every Locust user was busy
    events_sent: int = 0  # Kafka events acknowledged
    upstream_outcomes: dict[str, int] | None = None


def duration_seconds(text: str) -> float:
    """'90', '90s', '2m', '1h30m' -> seconds (Locust's --run-time syntax)."""
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+)([hms])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"bad duration {text!r} (e.g. 60s, 2m, 1h30m)")
    return float(sum(int(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts))


def _number(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return math.nan  # Locust writes N/A for a percentile without samples


def read_stats(stats_csv: Path, name: str = RANK_NAME) -> dict[str, str] | None:
    """The row of Locust's ``*_stats.csv`` for one request name (None when absent)."""
    with stats_csv.open(newline="") as f:
        for row in csv.DictReader(f):
            if row["Name"] == name:
                return row
    return None


def summarize(stats_csv: Path, extra_stats: Path | None = None) -> Summary | None:
    row = read_stats(stats_csv)
    if row is None:
        return None
    requests, failures = int(row["Request Count"]), int(row["Failure Count"])
    summary = Summary(
        requests=requests,
        failures=failures,
        error_rate=failures / requests if requests else 0.0,
        p50_ms=_number(row["50%"]),
        p95_ms=_number(row["95%"]),
        p99_ms=_number(row["99%"]),
        max_ms=_number(row["Max Response Time"]),
        throughput_rps=_number(row["Requests/s"]),
    )
    kafka = read_stats(stats_csv, KAFKA_NAME)
    if kafka is not None:
        summary.events_sent = int(kafka["Request Count"]) - int(kafka["Failure Count"])
    if extra_stats is not None and extra_stats.is_file():
        extra = json.loads(extra_stats.read_text())
        summary.late_share = (extra.get("rank_dispatch") or {}).get("late_share", 0.0)
        summary.upstream_outcomes = extra.get("upstream_outcomes")
    return summary


def evaluate_slo(
    summary: Summary, p99_ms: float | None = None, error_rate: float | None = None
) -> list[str]:
    """The SLO bounds the run passed (empty when it met them all, or none was given).

    A run without a single successful request violates any P99 bound.
    """
    violations = []
    if p99_ms is not None and not (summary.p99_ms <= p99_ms):  # NaN counts as a violation
        violations.append(f"P99 {summary.p99_ms:.1f} ms > {p99_ms:g} ms")
    if error_rate is not None and summary.error_rate > error_rate:
        violations.append(f"error rate {summary.error_rate:.4f} > {error_rate:g}")
    return violations


def format_summary(s: Summary) -> str:
    lines = [
        f"POST {RANK_NAME}: {s.requests} requests, {s.failures} failed "
        f"(error rate {100 * s.error_rate:.2f}%), throughput {s.throughput_rps:.2f} req/s",
        f"latency ms: P50 {s.p50_ms:.0f}  P95 {s.p95_ms:.0f}  P99 {s.p99_ms:.0f}  "
        f"max {s.max_ms:.0f}",
        f"arrivals sent late (all users busy): {100 * s.late_share:.1f}%",
    ]
    if s.events_sent:
        lines.append(f"Kafka events acknowledged: {s.events_sent}")
    if s.upstream_outcomes:
        lines.append(f"upstream embedding outcomes: {s.upstream_outcomes}")
    return "\n".join(lines)


def locust_argv(args: argparse.Namespace, host: str, passthrough: list[str]) -> list[str]:
    users = args.users or max(16, math.ceil(args.rate * 2))
    classes = ["RankUser"]
    extra: list[str] = []
    if args.kafka_bootstrap and args.event_rate > 0:
        classes.append("EventPublisher")
        users += 1
        extra += ["--kafka-bootstrap", args.kafka_bootstrap, "--event-rate", str(args.event_rate)]
        extra += ["--events-topic", args.events_topic]
    prefix = args.run_dir / "locust"
    return [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "--host", host, "--users", str(users), "--spawn-rate", str(users),
        "--run-time", args.duration, "--stop-timeout", "10",
        "--csv", str(prefix), "--csv-full-history", "--html", str(args.run_dir / "report.html"),
        "--only-summary", "--loglevel", "WARNING",
        "--rate", str(args.rate), "--arrival", args.arrival, "--arrival-seed", str(args.seed),
        "--extra-stats", str(args.run_dir / "extra_stats.json"),
        "--population-users", str(args.population_users),
        *extra, *passthrough, *classes,
    ]  # fmt: skip


def run_locust(args: argparse.Namespace, host: str, passthrough: list[str]) -> Summary | None:
    args.run_dir.mkdir(parents=True, exist_ok=True)
    argv = locust_argv(args, host, passthrough)
    log.info("running: %s", " ".join(argv))
    # Locust exits 1 whenever a request failed; our own SLO evaluation decides the status.
    with (args.run_dir / "locust.log").open("wb") as out:
        rc = subprocess.run(argv, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT).returncode
    stats = args.run_dir / "locust_stats.csv"
    if not stats.is_file():
        log.error("locust exited %d without statistics; see %s", rc, args.run_dir / "locust.log")
        return None
    return summarize(stats, args.run_dir / "extra_stats.json")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="http://127.0.0.1:8000", help="the ranker's base URL")
    p.add_argument("--rate", type=float, default=10.0, help="ranking requests per second")
    p.add_argument("--duration", default="60s", help="e.g. 60s, 5m")
    p.add_argument("--arrival", choices=("constant", "poisson", "bursty"), default="poisson")
    p.add_argument("--users", type=int, default=0, help="Locust users (default 2 x rate, >= 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--population-users", type=int, default=1000, help="distinct user ids")
    p.add_argument("--run-dir", type=Path, default=None, help="default runs/loadtest-<time>")
    p.add_argument("--slo-p99-ms", type=float, default=None)
    p.add_argument("--slo-error-rate", type=float, default=None)
    p.add_argument("--kafka", dest="kafka_bootstrap", default="", help="publish events here")
    p.add_argument("--kafka-bootstrap", dest="kafka_bootstrap", help=argparse.SUPPRESS)  # old
    p.add_argument("--events-topic", default="user-events")
    p.add_argument("--event-rate", type=float, default=0.0, help="Kafka events per second")
    p.add_argument(
        "--start-ranker",
        action="store_true",
        help="start redis-server + a ranker here (seeded population) instead of using --host",
    )
    p.add_argument(
        "--local-stack",
        action="store_true",
        help="start the whole stack here (loadtests.stack.local_stack: Tansu, redis-server, "
        "upstream "
        "worker, ranker; needs `make train`), seed the population; --event-rate publishes to it",
    )
    p.add_argument(
        "--seed-redis",
        default="",
        help="before the run, write the population's histories and embeddings to this Redis "
        "(redis://host:port/0), shaped for --checkpoint",
    )
    p.add_argument("--checkpoint", type=Path, default=REPO_ROOT / "artifacts/demo/online")
    return p


def seed_for_checkpoint(redis_url: str, checkpoint: Path, population_users: int) -> None:
    """Seed the load-test population into a running stack's Redis, in the shapes and upstream
    version of the ranker's checkpoint (so fresh users' lookups are hits)."""
    from loadtests.locust.seed import main as seed_main

    args = ["--redis-url", redis_url, "--checkpoint", str(checkpoint)]
    seed_main([*args, "--population-users", str(population_users)])


def main(argv: list[str] | None = None) -> int:
    args, passthrough = build_parser().parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    duration_seconds(args.duration)  # fail early on a bad duration
    if args.run_dir is None:
        args.run_dir = REPO_ROOT / "runs" / time.strftime("loadtest-%Y%m%d-%H%M%S")
    args.run_dir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    if args.seed_redis:
        seed_for_checkpoint(args.seed_redis, args.checkpoint, args.population_users)
    if args.local_stack:
        from loadtests.stack.local_stack import LocalStack, StackOptions

        options = StackOptions(run_dir=args.run_dir / "stack", online_checkpoint=args.checkpoint)
        with LocalStack(options) as stack:
            seed_for_checkpoint(stack.redis_url, args.checkpoint, args.population_users)
            args.kafka_bootstrap = args.kafka_bootstrap or stack.kafka_bootstrap
            summary = run_locust(args, stack.ranker_url, passthrough)
    elif args.start_ranker:
        from loadtests.locust.traffic import Population
        from loadtests.stack.local_ranker import LocalRanker

        population = Population(users=args.population_users)
        with LocalRanker(args.run_dir, population) as ranker:
            log.info("started %s", ranker.checkpoint_note)
            summary = run_locust(args, ranker.url, passthrough)
    else:
        summary = run_locust(args, args.host, passthrough)
    if summary is None:
        print(f"no statistics for POST {RANK_NAME}; see {args.run_dir}/locust.log")
        return 2
    violations = evaluate_slo(summary, args.slo_p99_ms, args.slo_error_rate)
    record = {
        "arrival": args.arrival,
        "rate": args.rate,
        "duration": args.duration,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "summary": asdict(summary),
        "slo": {"p99_ms": args.slo_p99_ms, "error_rate": args.slo_error_rate},
        "violations": violations,
    }
    (args.run_dir / "summary.json").write_text(json.dumps(record, indent=2))
    print(format_summary(summary))
    print(f"CSV and HTML report: {args.run_dir}")
    if violations:
        print("SLO VIOLATED: " + "; ".join(violations))
        return 1
    if args.slo_p99_ms is not None or args.slo_error_rate is not None:
        print("SLO met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
