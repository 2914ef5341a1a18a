"""Re-encode every user that has a history with one upstream checkpoint (an upstream rollout).

``python -m upstream_service.backfill --checkpoint PATH [--rate 200]`` enumerates users with a
non-blocking ``SCAN`` over the history keys and publishes one ``contract.RefreshRequest`` per user
to the refresh topic, keyed by user, so the worker group encodes them in parallel across
partitions; workers serve event-triggered refreshes first and backfill requests only with spare
capacity. The SCAN cursor is checkpointed in Redis after every page whose requests Kafka
acknowledged, so a crashed backfill resumes where it stopped (``--restart`` starts over).
Requests are rate-limited (``--rate`` users/s) and a progress bar shows users published and the
share of scanned users that already have an embedding of the version (its coverage).

Connection settings come from the worker's ``UPSTREAM_*`` environment (``Settings``).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from tqdm import tqdm

from shared_model.checkpoint import load_checkpoint
from shared_model.contract import (
    KEY_PREFIX,
    RefreshRequest,
    history_key,
    history_pattern,
    user_of_key,
    versioned_embedding_key,
)
from upstream_service.consumer import build_producer
from upstream_service.redis_client import RedisClient, connect_redis, is_cluster
from upstream_service.settings import Settings

log = logging.getLogger(__name__)

SCAN_COUNT = 500  # keys examined per SCAN call: small enough never to block Redis


def progress_key(model_version: str) -> str:
    """Hash: per Redis node, the SCAN cursor reached (``done`` when finished); ``published``."""
    return f"{KEY_PREFIX}:backfill:{model_version}"


@dataclass
class BackfillStats:
    scanned: int = 0  # users seen
    published: int = 0  # refresh requests acknowledged by Kafka
    covered: int = 0  # scanned users that already had an embedding of the version


def _nodes(client: RedisClient) -> list[tuple[str, object | None]]:
    """(name, target node) per node to scan: every primary of a cluster, or the one server."""
    if is_cluster(client):
        return [(n.name, n) for n in client.get_primaries()]
    return [("server", None)]


def scan_users(
    client: RedisClient, cursors: dict[str, str]
) -> Iterator[tuple[str, int, list[str]]]:
    """Per SCAN page: (node, next cursor, users with a history). Resumes from ``cursors``.

    A user with both sources is reported once (from its engagement key, or from its impression
    key when it has no engagement key).
    """
    for name, node in _nodes(client):
        cursor = cursors.get(name, "0")
        if cursor == "done":
            continue
        cursor = int(cursor)
        while True:
            kwargs = {"target_nodes": node} if node is not None else {}
            cursor, keys = client.scan(cursor, match=history_pattern(), count=SCAN_COUNT, **kwargs)
            users, only_imp = [], []
            for key in keys:
                text = key.decode() if isinstance(key, bytes) else key
                if text.endswith(":eng"):
                    users.append(user_of_key(text))
                elif text.endswith(":imp"):
                    only_imp.append(user_of_key(text))
            if only_imp:
                pipe = client.pipeline(transaction=False)
                for user in only_imp:
                    pipe.exists(history_key(user, "eng"))
                users += [u for u, has in zip(only_imp, pipe.execute(), strict=True) if not has]
            yield name, cursor, users
            if cursor == 0:
                break


class RateLimiter:
    """At most ``rate`` acquisitions per second on average (0 = unlimited)."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.clock = rate, clock
        self.next_at = clock()

    def wait(self, n: int) -> None:
        if self.rate <= 0 or n <= 0:
            return
        now = self.clock()
        if self.next_at > now:
            time.sleep(self.next_at - now)
        self.next_at = max(self.next_at, now) + n / self.rate


def run_backfill(
    settings: Settings,
    model_version: str,
    *,
    rate: float = 0.0,
    restart: bool = False,
    client: RedisClient | None = None,
    show_progress: bool = True,
) -> BackfillStats:
    """Publish a refresh request for every user with a history; resumable (see module doc)."""
    client = client or connect_redis(settings)
    key = progress_key(model_version)
    if restart:
        client.delete(key)
    saved = {k.decode(): v.decode() for k, v in client.hgetall(key).items()}
    stats = BackfillStats(published=int(saved.pop("published", 0)))
    producer = build_producer(settings)
    limiter = RateLimiter(rate)
    bar = tqdm(total=None, unit="user", desc=f"backfill {model_version}", disable=not show_progress)
    bar.update(stats.published)
    try:
        for node, cursor, users in scan_users(client, saved):
            if users:
                pipe = client.pipeline(transaction=False)
                for user in users:
                    pipe.exists(versioned_embedding_key(user, model_version))
                stats.covered += sum(bool(x) for x in pipe.execute())
                stats.scanned += len(users)
            futures = []
            for user in users:
                limiter.wait(1)
                request = RefreshRequest(user, model_version, int(time.time() * 1000))
                futures.append(
                    producer.send(
                        settings.refresh_topic, key=request.kafka_key(), value=request.encode()
                    )
                )
            producer.flush(timeout=30)
            for future in futures:
                future.get(timeout=30)  # raises: the cursor is not advanced past this page
            stats.published += len(users)
            client.hset(
                key,
                mapping={
                    node: "done" if cursor == 0 else str(cursor),
                    "published": stats.published,
                },
            )
            bar.update(len(users))
            if stats.scanned:
                bar.set_postfix(coverage=f"{stats.covered / stats.scanned:.1%}")
    finally:
        bar.close()
        producer.close(timeout=5)
    log.info("backfill of %s: %s", model_version, json.dumps(stats.__dict__))
    return stats


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="the upstream checkpoint to backfill")
    parser.add_argument("--rate", type=float, default=0.0, help="users/s (0 = unlimited)")
    parser.add_argument("--restart", action="store_true", help="ignore a saved cursor")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    version = load_checkpoint(args.checkpoint, stage="upstream").model_version
    stats = run_backfill(Settings(), version, rate=args.rate, restart=args.restart)
    print(json.dumps({"model_version": version, **stats.__dict__}))


if __name__ == "__main__":
    main()
