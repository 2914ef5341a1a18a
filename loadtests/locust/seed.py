"""Seed a running stack's Redis with the load test's population, without torch.

    python -m loadtests.locust.seed --redis-url-file /run/secrets/ranker_redis_url \
        --checkpoint /models/online --population-users 1000

The compose ``locust-seed`` service runs this once before Locust starts, so the ``fresh`` and
``stale`` users of the population (``loadtests.locust.traffic``) have the histories and upstream
embeddings their names promise, in the shapes and upstream version of the ranker's checkpoint.
The checkpoint's ``config.json`` is read as JSON: the Locust image has no torch.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import redis

from loadtests.locust.traffic import Population, seed_redis

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckpointShape:
    history_length: int  # the online model's max_seq_len
    content_dim: int
    d_upstream: int
    upstream_model_version: str  # what the ranker expects in an embedding record


def checkpoint_shape(checkpoint: Path) -> CheckpointShape:
    """The sizes the seeded records need, from an online checkpoint's ``config.json``."""
    path = Path(checkpoint) / "config.json"
    try:
        doc = json.loads(path.read_text())
        config = doc["config"]
        if config.get("stage") not in (None, "online"):
            raise ValueError(f"a {config['stage']!r} checkpoint, expected the online one")
        return CheckpointShape(
            history_length=int(config["max_seq_len"]),
            content_dim=int(config["content_dim"]),
            d_upstream=int(config["d_upstream"]),
            upstream_model_version=doc.get("metadata", {}).get("upstream_model_version")
            or "unknown",
        )
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SystemExit(f"{path}: not a readable online checkpoint config: {e}") from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    url = p.add_mutually_exclusive_group(required=True)
    url.add_argument("--redis-url", help="redis://[:password@]host:port/db")
    url.add_argument("--redis-url-file", type=Path, help="a file holding the URL (a secret)")
    p.add_argument("--checkpoint", type=Path, required=True, help="online checkpoint directory")
    p.add_argument("--population-users", type=int, default=1000)
    p.add_argument("--fresh-share", type=float, default=0.6)
    p.add_argument("--stale-share", type=float, default=0.2)
    p.add_argument("--user-prefix", default="lt")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    shape = checkpoint_shape(args.checkpoint)
    redis_url = args.redis_url or args.redis_url_file.read_text().strip()
    population = Population(
        users=args.population_users,
        fresh_share=args.fresh_share,
        stale_share=args.stale_share,
        prefix=args.user_prefix,
    )
    client = redis.Redis.from_url(redis_url)
    try:
        seed_redis(
            client,
            population,
            history_length=shape.history_length,
            content_dim=shape.content_dim,
            d_upstream=shape.d_upstream,
            upstream_model_version=shape.upstream_model_version,
        )
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
