"""``python -m loadtests.stack`` (``make stack``, ``llatte-stack``): the whole system, kept up.

Starts a Tansu Kafka broker, a redis-server, the upstream worker, the ranker and, when the
``prometheus`` binary is installed, a local Prometheus scraping both services, on fixed
loopback ports that it prints; then stays up until Ctrl-C (or SIGTERM), and stops everything
it started. Trains the demo checkpoints first when ``artifacts/demo/`` holds none that fit.

    python -m loadtests.stack                        # Kafka 19092, Redis 16379, ranker 8000
    curl -s localhost:8000/v1/rank -H 'content-type: application/json' -d @request.json
    llatte-produce --kafka 127.0.0.1:19092 --count 2000 --rate 200
    curl -s localhost:9101/metrics | grep upstream_embeddings_written_total
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from loadtests.stack.demo import DEMO_CHECKPOINTS, ensure_checkpoints
from loadtests.stack.local_stack import (
    EVENTS_TOPIC,
    REPO_ROOT,
    LocalStack,
    StackOptions,
    interrupt_on_termination,
)
from loadtests.stack.servers import PrometheusServer

log = logging.getLogger("loadtests.stack")

READY_LINE = "llatte stack is up"  # printed once everything answers; tests wait for it


@dataclass(frozen=True)
class Ports:
    kafka: int = 19092
    redis: int = 16379
    ranker: int = 8000
    worker_metrics: int = 9101
    prometheus: int = 9090


def example_request() -> dict:
    """A rank request any checkpoint accepts (content and float features are optional)."""
    return {
        "user_id": "user-1",
        "context": {"surface": "feed", "device": "ios"},
        "candidates": [
            {"ad_id": f"ad-{i}", "advertiser_id": f"advertiser-{i % 2}"} for i in range(3)
        ],
    }


def banner(stack: LocalStack, prometheus: PrometheusServer | None) -> str:
    body = shlex.quote(json.dumps(example_request()))
    lines = [
        f"{READY_LINE} (Ctrl-C stops everything; logs in {stack.options.run_dir})",
        f"  kafka       {stack.kafka_bootstrap}  (topic {EVENTS_TOPIC})",
        f"  redis       {stack.redis_url}",
        f"  ranker      {stack.ranker_url}  (/v1/rank, /metrics, /docs)",
        *(f"  upstream    {url}" for url in stack.upstream_metrics_urls),
        f"  prometheus  {prometheus.url}" if prometheus else "  prometheus  not installed",
        "try:",
        f"  curl -s {stack.ranker_url}/v1/rank -H 'content-type: application/json' -d {body}",
        f"  llatte-produce --kafka {stack.kafka_bootstrap} --count 2000 --rate 200",
        f"  curl -s {stack.upstream_metrics_urls[0]} | grep upstream_embeddings_written_total",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    d = Ports()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--kafka-port", type=int, default=d.kafka)
    p.add_argument("--redis-port", type=int, default=d.redis)
    p.add_argument("--ranker-port", type=int, default=d.ranker)
    p.add_argument(
        "--worker-metrics-port", type=int, default=d.worker_metrics,
        help="worker i serves /metrics on this port + i",
    )  # fmt: skip
    p.add_argument("--prometheus-port", type=int, default=d.prometheus)
    p.add_argument("--no-prometheus", action="store_true", help="do not start Prometheus")
    p.add_argument("--workers", type=int, default=1, help="upstream consumer-group members")
    p.add_argument(
        "--redis-cluster", action="store_true",
        help="a local Redis Cluster (3 masters, a replica each, on free ports) instead of one "
        "redis-server on --redis-port",
    )  # fmt: skip
    p.add_argument("--upstream-checkpoint", type=Path, default=DEMO_CHECKPOINTS / "upstream")
    p.add_argument("--online-checkpoint", type=Path, default=DEMO_CHECKPOINTS / "online")
    p.add_argument("--run-dir", type=Path, help="logs (default runs/stack-<time>)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    interrupt_on_termination()
    run_dir = args.run_dir or REPO_ROOT / "runs" / time.strftime("stack-%Y%m%d-%H%M%S")
    options = StackOptions(
        run_dir=run_dir,
        upstream_checkpoint=args.upstream_checkpoint,
        online_checkpoint=args.online_checkpoint,
        upstream_workers=args.workers,
        redis_cluster=args.redis_cluster,
        redis_port=args.redis_port,
        kafka_port=args.kafka_port,
        ranker_port=args.ranker_port,
        worker_metrics_port=args.worker_metrics_port,
    )
    prometheus: PrometheusServer | None = None
    try:
        ensure_checkpoints(args.upstream_checkpoint, args.online_checkpoint)
        with LocalStack(options) as stack:
            if not args.no_prometheus and shutil.which("prometheus"):
                prometheus = PrometheusServer(
                    stack.scrape_targets(), args.prometheus_port, scrape_interval="5s"
                ).start()
            print(banner(stack, prometheus), flush=True)
            children = [stack.ranker, *stack.workers, stack.redis, stack.broker, prometheus]
            while True:
                for child in children:
                    if child is not None and not child.running:
                        raise RuntimeError(f"{child.name} exited; see its log in {run_dir}")
                time.sleep(1.0)  # nothing to do but notice a child dying
    except KeyboardInterrupt:
        log.info("stopping the stack")
        return 0
    except Exception as e:
        log.error("stack failed: %s (logs in %s)", e, run_dir)
        return 1
    finally:
        if prometheus is not None:
            prometheus.stop()


if __name__ == "__main__":
    sys.exit(main())
