"""The worker's Redis client: one server, or a Redis Cluster (``UPSTREAM_REDIS_CLUSTER=true``).

Every place in the worker that talks to Redis gets its client from ``connect_redis`` and writes
through the two helpers below, so the same code runs on both:

* all of a user's keys share one hash tag (``contract._tag``), so the per-user commands of a
  pipeline land on one slot, and redis-py's cluster pipeline sends each node its commands in one
  round trip;
* a cluster pipeline cannot be a MULTI/EXEC across users (their keys live on different slots),
  so ``pipeline`` is transactional on one server only; every write the worker pipelines is
  idempotent (ZADD of identical members, trim, write-if-newer), so a pipeline cut in the middle
  and retried converges to the same state;
* a cluster pipeline refuses EVALSHA, so ``queue_script`` queues the script as EVAL there (its
  keys, all on the user's slot, route it).
"""

from __future__ import annotations

from collections.abc import Sequence

import redis
import redis.cluster
from redis.commands.core import Script
from redis.exceptions import RedisClusterException

from upstream_service.settings import Settings

RedisClient = redis.Redis | redis.cluster.RedisCluster
Pipeline = redis.client.Pipeline | redis.cluster.ClusterPipeline

# What a Redis call can raise when a server or the cluster is unavailable (a slot without a
# master during a failover raises ``SlotNotCoveredError``, which is not a ``RedisError``).
REDIS_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, RedisClusterException)


def connect_redis(settings: Settings) -> RedisClient:
    """The client for ``settings.redis_url``: a cluster client seeded from that node when
    ``settings.redis_cluster``, else a plain one."""
    kwargs: dict = {"socket_timeout": settings.redis_timeout_ms / 1000, "health_check_interval": 30}
    if settings.redis_password is not None:
        kwargs["password"] = settings.redis_password.get_secret_value()
    if settings.redis_tls_ca_file is not None:
        kwargs["ssl_ca_certs"] = str(settings.redis_tls_ca_file)
    if settings.redis_cluster:
        return redis.cluster.RedisCluster.from_url(settings.redis_url, **kwargs)
    return redis.Redis.from_url(settings.redis_url, **kwargs)


def is_cluster(client: RedisClient) -> bool:
    return isinstance(client, redis.cluster.RedisCluster)


def pipeline(client: RedisClient, *, atomic: bool = False) -> Pipeline:
    """A pipeline; ``atomic`` makes it MULTI/EXEC on a single server (a cluster has none
    across slots, see the module docstring)."""
    return client.pipeline(transaction=atomic and not is_cluster(client))


def queue_script(
    pipe: Pipeline, script: Script, keys: Sequence[str], args: Sequence[object]
) -> None:
    """Queue ``script`` on ``pipe``: EVALSHA on one server, EVAL on a cluster."""
    if isinstance(pipe, redis.cluster.ClusterPipeline):
        pipe.execute_command("EVAL", script.script, len(keys), *keys, *args)
    else:
        script(keys=list(keys), args=list(args), client=pipe)
