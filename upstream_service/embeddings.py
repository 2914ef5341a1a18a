"""Operations on the stored upstream embeddings: coverage per model version, retiring a version.

``python -m upstream_service.embeddings coverage --version V [--version W]`` counts users with a
history and users with an embedding of each version (non-blocking ``SCAN``) and prints the
coverage (also what ``coverage()`` returns to the backfill and the rollout benchmark).

``python -m upstream_service.embeddings retire --version A`` deletes every embedding of version
A (``SCAN`` + ``UNLINK`` in pages, never ``KEYS``): the last step of a rollout, once every ranker
reads B. Without it, A's keys expire after ``UPSTREAM_EMBEDDING_TTL_S`` anyway.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator

from shared_model.contract import history_pattern, user_of_key, versioned_embedding_pattern
from upstream_service.redis_client import RedisClient, connect_redis, is_cluster
from upstream_service.settings import Settings

SCAN_COUNT = 500


def _scan(client: RedisClient, pattern: str) -> Iterator[list[bytes]]:
    """Pages of keys matching ``pattern`` on every node (each primary of a cluster)."""
    targets = client.get_primaries() if is_cluster(client) else [None]
    for node in targets:
        kwargs = {"target_nodes": node} if node is not None else {}
        cursor = 0
        while True:
            cursor, keys = client.scan(cursor, match=pattern, count=SCAN_COUNT, **kwargs)
            if keys:
                yield keys
            if cursor == 0:
                break


def coverage(client: RedisClient, versions: list[str]) -> dict[str, object]:
    """Users with a history, and per version users with an embedding of it and their share."""
    users = {user_of_key(k) for page in _scan(client, history_pattern()) for k in page}
    out: dict[str, object] = {"users_with_history": len(users)}
    for version in versions:
        covered = {user_of_key(k) for page in _scan(client, versioned_embedding_pattern(version))
                   for k in page} & users  # fmt: skip
        out[version] = {
            "users": len(covered),
            "coverage": len(covered) / len(users) if users else 0.0,
        }
    return out


def retire(client: RedisClient, version: str) -> int:
    """Delete every user's embedding of ``version``; returns how many keys were removed."""
    removed = 0
    for page in _scan(client, versioned_embedding_pattern(version)):
        if is_cluster(client):
            pipe = client.pipeline(transaction=False)
            for key in page:
                pipe.unlink(key)  # one key per command: keys of a page span slots
            removed += sum(pipe.execute())
        else:
            removed += client.unlink(*page)
    return removed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cov = sub.add_parser("coverage", help="users with an embedding of each version")
    cov.add_argument("--version", action="append", required=True)
    ret = sub.add_parser("retire", help="delete every embedding of one version")
    ret.add_argument("--version", required=True)
    args = parser.parse_args(argv)
    client = connect_redis(Settings())
    if args.command == "coverage":
        print(json.dumps(coverage(client, args.version)))
    else:
        print(json.dumps({"version": args.version, "removed": retire(client, args.version)}))


if __name__ == "__main__":
    main()
