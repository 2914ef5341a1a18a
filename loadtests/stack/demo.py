"""``python -m loadtests.stack.demo`` (``make demo``): the whole system end to end on this machine.

1. makes sure the demo checkpoints exist (trains them when they do not);
2. starts a Tansu Kafka broker, a redis-server, the upstream worker and the ranker
   (``loadtests.stack.local_stack``), each a real process on a free port;
3. publishes synthetic user events with the event producer (``upstream_service.produce``,
   re-stamped with the send time so that freshness is real);
4. waits until the worker has consumed them and written the embeddings their conversions
   triggered;
5. ranks candidates for users drawn from those with a history, and prints a report: embeddings
   written, freshness P50/P99, ranking latency P50/P99, the share of requests that used the
   upstream embedding, and one ranked response.

Everything it started is stopped on exit, on failure and on Ctrl-C/SIGTERM. Logs stay in
``runs/demo-<time>/``.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from prometheus_client.parser import text_string_to_metric_families

from loadtests.bench.common import percentile
from loadtests.stack.local_stack import (
    EVENTS_TOPIC,
    REPO_ROOT,
    LocalStack,
    StackOptions,
    interrupt_on_termination,
    python_module,
    run_foreground,
)
from loadtests.stack.polling import wait_for
from shared_model.contract import KEY_PREFIX

log = logging.getLogger("loadtests.stack.demo")

# An empty ProxyHandler: an http_proxy in the environment must never intercept loopback.
DEMO_CHECKPOINTS = REPO_ROOT / "artifacts" / "demo"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------


def checkpoints_present(upstream: Path, online: Path) -> bool:
    return all((p / "config.json").is_file() and (p / "model.safetensors").is_file()
               for p in (upstream, online))  # fmt: skip


def checkpoints_current(upstream: Path, online: Path) -> bool:
    """Present and loadable by this code; the default demo checkpoints must also have been
    built from the demo configs in the repository (other checkpoints are taken as given)."""
    if not checkpoints_present(upstream, online):
        return False
    from shared_model.checkpoint import CheckpointError, load_checkpoint
    from shared_model.config import LLaTTEConfig

    configs = Path(__file__).resolve().parents[2] / "shared_model" / "configs"
    is_default = upstream.resolve() == (DEMO_CHECKPOINTS / "upstream").resolve()
    for path, stage in ((upstream, "upstream"), (online, "online")):
        expected = LLaTTEConfig.from_json(configs / f"demo_{stage}.json") if is_default else None
        try:
            load_checkpoint(path, expected=expected, stage=stage)
        except CheckpointError as e:
            log.info("demo checkpoint %s is out of date (%s): retraining", path, e)
            return False
    return True


def ensure_checkpoints(upstream: Path, online: Path) -> None:
    """Train the demo models (``python -m shared_model.training``) when either is missing or
    no longer matches the code and the demo configs."""
    if checkpoints_current(upstream, online):
        return
    log.info("no current demo checkpoint in %s: training the demo models (about 2 minutes)",
             upstream.parent)  # fmt: skip
    if upstream.parent != online.parent or (upstream.name, online.name) != ("upstream", "online"):
        raise FileNotFoundError(f"no checkpoints at {upstream} and {online}")
    rc = run_foreground(python_module("shared_model.training", "--out", str(upstream.parent)))
    if rc != 0 or not checkpoints_present(upstream, online):
        raise RuntimeError(f"training failed (exit {rc}); see its output above")


def checkpoint_meta(path: Path) -> dict[str, Any]:
    return json.loads((path / "config.json").read_text())


# ----------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)] of one /metrics page."""
    with _OPENER.open(url, timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples


def total(samples: dict[str, list[tuple[dict[str, str], float]]], name: str) -> float:
    return sum(value for _, value in samples.get(name, []))


def merged_scrape(urls: list[str]) -> dict[str, list[tuple[dict[str, str], float]]]:
    merged: dict[str, list[tuple[dict[str, str], float]]] = {}
    for url in urls:
        for name, values in scrape(url).items():
            merged.setdefault(name, []).extend(values)
    return merged


def histogram_quantile(q: float, samples: dict, name: str) -> float:
    """Prometheus's ``histogram_quantile`` over cumulative ``name_bucket`` samples (summed over
    all series): linear interpolation inside the bucket that holds the q-th observation."""
    buckets: dict[float, float] = {}
    for labels, value in samples.get(f"{name}_bucket", []):
        le = float(labels["le"])
        buckets[le] = buckets.get(le, 0.0) + value
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] == 0:
        return float("nan")
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return lower  # Prometheus returns the highest finite bound
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = bound, count
    return lower


# ----------------------------------------------------------------------------------------------
# Traffic
# ----------------------------------------------------------------------------------------------


@dataclass
class TrafficOptions:
    events: int = 4000  # synthetic events to publish
    rate: float = 500.0  # events per second
    users: int = 200  # size of the synthetic world's user population
    seed: int = 0
    requests: int = 200  # ranking requests
    candidates: int = 50  # candidates per request


def publish_events(stack: LocalStack, t: TrafficOptions, progress: bool = True) -> None:
    """The event producer, as a user would run it, against the stack's broker."""
    args = [
        "--kafka", stack.kafka_bootstrap,
        "--topic", EVENTS_TOPIC,
        "--count", str(t.events),
        "--rate", str(t.rate),
        "--users", str(t.users),
        "--seed", str(t.seed),
        "--restamp",
    ]  # fmt: skip
    if not progress:
        args.append("--no-progress")
    rc = run_foreground(python_module("upstream_service.produce", *args), timeout=600)
    if rc != 0:
        raise RuntimeError(f"the event producer failed (exit {rc})")


def wait_for_worker(stack: LocalStack, events: int, timeout: float = 300.0) -> None:
    """Until every published event was consumed and every refresh it triggered was written
    (the condition must hold on two polls in a row: a batch may be between queue and Redis)."""
    held = 0

    def caught_up() -> bool:
        nonlocal held
        m = merged_scrape(stack.upstream_metrics_urls)
        seen = sum(
            total(m, n)
            for n in (
                "upstream_events_consumed_total",
                "upstream_events_invalid_total",
                "upstream_events_duplicate_total",
            )
        )
        if seen < events:
            held = 0
            return False
        if total(m, "upstream_triggers_total") == 0:
            raise RuntimeError(f"no conversion among {events} events: publish more (--events)")
        done = (
            total(m, "upstream_pending_refreshes") == 0
            and total(m, "upstream_embeddings_written_total") > 0
        )
        held = held + 1 if done else 0
        return held >= 2

    wait_for(caught_up, timeout, f"the upstream worker to consume {events} events", 0.5)


def users_with_history(client: redis.Redis) -> list[str]:
    """User ids that have a history in Redis (parsed from the contract's key layout)."""
    users = set()
    for key in client.scan_iter(match=f"{KEY_PREFIX}:u:*:hist:*", count=1000):
        text = key.decode()
        users.add(text[text.index("{") + 1 : text.rindex("}")])
    return sorted(users)


def count_embeddings(client: redis.Redis) -> int:
    """Stored embedding keys: one per (user, model version), plus any contract-v1 key."""
    return sum(
        sum(1 for _ in client.scan_iter(match=pattern, count=1000))
        for pattern in (f"{KEY_PREFIX}:u:*:emb", f"{KEY_PREFIX}:u:*:emb:*")
    )


class RequestFactory:
    """Rank requests with the synthetic world's ads as candidates, shaped for the loaded model
    (content vectors and float features are sent only when their width fits it)."""

    def __init__(self, t: TrafficOptions, online_checkpoint: Path) -> None:
        from shared_model.data.synthetic import SyntheticWorld, WorldConfig

        meta = checkpoint_meta(online_checkpoint)
        # The ads the ranker was trained on, when its checkpoint says which world that was.
        world = {**meta.get("metadata", {}).get("world_config", {}), "seed": t.seed}
        world["n_users"] = t.users
        self.world = SyntheticWorld(WorldConfig.from_dict(world))
        cfg = meta["config"]
        self.send_content = cfg.get("content_dim") == self.world.cfg.content_dim
        self.send_floats = cfg.get("n_candidate_floats") == self.world.cfg.ad_float_dim
        self.candidates = t.candidates
        self.rng = random.Random(t.seed)

    def __call__(self, user_id: str) -> dict[str, Any]:
        w = self.world
        ads = self.rng.sample(range(w.cfg.n_ads), min(self.candidates, w.cfg.n_ads))
        candidates = []
        for a in ads:
            c: dict[str, Any] = {"ad_id": w.ad_id(a), "advertiser_id": w.advertiser_id(a)}
            if self.send_content:
                c["content_embedding"] = [round(float(x), 4) for x in w.ad_content[a]]
            if self.send_floats:
                c["floats"] = [round(float(x), 4) for x in w.ad_floats[a]]
            candidates.append(c)
        digits = "".join(ch for ch in user_id if ch.isdigit())
        device = w.device(int(digits) % w.cfg.n_users) if digits else "web"
        context = {"surface": self.rng.choice(w.cfg.surfaces), "device": device}
        return {"user_id": user_id, "context": context, "candidates": candidates}


@dataclass
class RankingResult:
    latencies_ms: list[float]
    used_upstream: int
    errors: int
    example: dict[str, Any] | None


def send_rank_requests(stack: LocalStack, t: TrafficOptions, users: list[str]) -> RankingResult:
    make_request = RequestFactory(t, stack.options.online_checkpoint)
    rng = random.Random(t.seed + 1)
    latencies, used, errors, example = [], 0, 0, None
    for _ in range(t.requests):
        body = json.dumps(make_request(rng.choice(users))).encode()
        req = urllib.request.Request(
            f"{stack.ranker_url}/v1/rank", body, {"Content-Type": "application/json"}
        )
        began = time.perf_counter()
        try:
            with _OPENER.open(req, timeout=10) as response:
                answer = json.loads(response.read())
        except OSError as e:
            errors += 1
            log.warning("rank request failed: %s", e)
            continue
        latencies.append((time.perf_counter() - began) * 1000)
        if answer["upstream"]["status"] == "used":
            used += 1
            example = example or answer
    return RankingResult(latencies, used, errors, example or (answer if latencies else None))


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------


def report(stack: LocalStack, t: TrafficOptions, ranking: RankingResult, users: int) -> str:
    up = merged_scrape(stack.upstream_metrics_urls)
    client = stack.redis_client()
    try:
        stored = count_embeddings(client)
    finally:
        client.close()
    written = total(up, "upstream_embeddings_written_total")
    fresh_n = total(up, "upstream_freshness_seconds_count")
    fresh_mean = total(up, "upstream_freshness_seconds_sum") / max(fresh_n, 1)
    lat = ranking.latencies_ms
    n_ok = len(lat)
    lines = [
        "",
        "LLaTTE demo report",
        "==================",
        f"events published           {t.events} ({t.users}-user synthetic world, {t.rate:g}/s)",
        f"users with a history       {users}",
        f"embeddings written         {written:.0f} ({stored} users hold one in Redis)",
        f"freshness (event->Redis)   p50 {histogram_quantile(0.5, up, 'upstream_freshness_seconds') * 1000:.0f} ms"  # noqa: E501
        f", p99 {histogram_quantile(0.99, up, 'upstream_freshness_seconds') * 1000:.0f} ms"
        f" (histogram), mean {fresh_mean * 1000:.0f} ms over {fresh_n:.0f} refreshes",
        f"ranking requests           {n_ok} ok, {ranking.errors} failed,"
        f" {t.candidates} candidates each",
        f"ranking latency (client)   p50 {percentile(lat, 50):.1f} ms, p99 {percentile(lat, 99):.1f} ms",  # noqa: E501
        f"used the upstream embedding {ranking.used_upstream / max(n_ok, 1):.0%}"
        f" of requests ({ranking.used_upstream}/{n_ok}; users drawn uniformly from those with"
        " a history)",
    ]
    if ranking.example is not None:
        lines += ["example response (the top 3 candidates):", _compact(ranking.example, top=3)]
    return "\n".join(lines)


def _compact(response: dict[str, Any], top: int) -> str:
    """The response as JSON, one candidate per line, floats rounded."""

    def rounded(value: Any) -> Any:
        if isinstance(value, float):
            return round(value, 4)
        if isinstance(value, dict):
            return {k: rounded(v) for k, v in value.items()}
        return value

    n = len(response["candidates"])
    lines = [f"  {json.dumps(k)}: {json.dumps(rounded(v))}," for k, v in response.items()
             if k != "candidates"]  # fmt: skip
    rows = ",\n".join(f"    {json.dumps(rounded(c))}" for c in response["candidates"][:top])
    return "\n".join(["{", *lines, '  "candidates": [', rows, f"  ]  ({min(top, n)} of {n})", "}"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    t = TrafficOptions()
    p.add_argument("--events", type=int, default=t.events)
    p.add_argument("--rate", type=float, default=t.rate, help="events per second")
    p.add_argument("--users", type=int, default=t.users, help="synthetic world population")
    p.add_argument("--requests", type=int, default=t.requests)
    p.add_argument("--candidates", type=int, default=t.candidates)
    p.add_argument("--seed", type=int, default=t.seed)
    p.add_argument("--upstream-checkpoint", type=Path, default=DEMO_CHECKPOINTS / "upstream")
    p.add_argument("--online-checkpoint", type=Path, default=DEMO_CHECKPOINTS / "online")
    p.add_argument("--redis-url", help="use this running Redis instead of starting redis-server")
    p.add_argument(
        "--redis-cluster",
        action="store_true",
        help="start a local Redis Cluster (3 masters, a replica each), or with --redis-url treat "
        "that URL as a cluster seed node",
    )
    p.add_argument("--kafka", help="use this running Kafka (host:port) instead of Tansu")
    p.add_argument("--run-dir", type=Path, help="logs (default runs/demo-<time>)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    interrupt_on_termination()
    traffic = TrafficOptions(
        args.events, args.rate, args.users, args.seed, args.requests, args.candidates
    )
    run_dir = args.run_dir or REPO_ROOT / "runs" / time.strftime("demo-%Y%m%d-%H%M%S")
    began = time.monotonic()
    try:
        ensure_checkpoints(args.upstream_checkpoint, args.online_checkpoint)
        options = StackOptions(
            run_dir=run_dir,
            upstream_checkpoint=args.upstream_checkpoint,
            online_checkpoint=args.online_checkpoint,
            redis_url=args.redis_url,
            redis_cluster=args.redis_cluster,
            kafka_bootstrap=args.kafka,
        )
        log.info("starting the stack (logs in %s)", run_dir)
        with LocalStack(options) as stack:
            log.info("publishing %d events at %g/s", traffic.events, traffic.rate)
            publish_events(stack, traffic)
            wait_for_worker(stack, traffic.events)
            client = stack.redis_client()
            try:
                users = users_with_history(client)
            finally:
                client.close()
            log.info("sending %d ranking requests", traffic.requests)
            ranking = send_rank_requests(stack, traffic, users)
            print(report(stack, traffic, ranking, len(users)), flush=True)
            log.info("stopping the stack")
    except KeyboardInterrupt:
        log.warning("interrupted: everything started was stopped (logs in %s)", run_dir)
        return 130
    except Exception as e:
        log.error("demo failed: %s", e)
        log.error("service logs: %s", run_dir)
        return 1
    log.info("done in %.0fs; logs in %s", time.monotonic() - began, run_dir)
    if ranking.errors:
        log.error("%d of %d ranking requests failed", ranking.errors, traffic.requests)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
