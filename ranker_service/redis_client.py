"""The ranker's Redis client: one server, or a Redis Cluster (``RANKER_REDIS_CLUSTER=true``).

On a cluster the request's read stays one pipelined round trip per node: the user's embedding
and history keys share the user's hash tag (one slot, one node), and redis-py's cluster
pipeline sends each node its commands at once. Content keys carry no tag and span slots, so a
multi-key MGET is not allowed there: the store queues one GET per content key instead.
"""

from __future__ import annotations

import redis.asyncio as aioredis
import redis.asyncio.cluster as aiocluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError

from ranker_service.settings import Settings

RedisClient = aioredis.Redis | aiocluster.RedisCluster

# What a read can raise when Redis is unavailable (a slot without a master during a cluster
# failover raises ``SlotNotCoveredError``, which is not a ``RedisError``).
REDIS_ERRORS: tuple[type[Exception], ...] = (RedisError, RedisClusterException, OSError)


def connect_redis(settings: Settings, timeout_s: float) -> RedisClient:
    """The client for ``settings.redis_url`` with socket timeouts of ``timeout_s``."""
    kwargs: dict = {
        # Socket timeouts back up the request's budget; one immediate retry reconnects a
        # connection that went stale while Redis restarted (the budget still bounds the total).
        "socket_timeout": max(timeout_s, 0.001),
        "socket_connect_timeout": max(timeout_s, 0.001),
        "retry": Retry(NoBackoff(), retries=1),
        "max_connections": settings.redis_max_connections,  # per node on a cluster
        "health_check_interval": 0,
    }
    if settings.redis_tls_ca_file is not None:
        kwargs["ssl_ca_certs"] = str(settings.redis_tls_ca_file)
    url = settings.redis_url.get_secret_value()
    if settings.redis_cluster:
        return aiocluster.RedisCluster.from_url(url, **kwargs)
    return aioredis.Redis.from_url(url, **kwargs)
