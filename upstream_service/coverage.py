"""Embedding coverage by model version, as gauges on the worker's /metrics.

During a rollout the question is "what share of the users with a history already have an
embedding of version B?". The worker answers it for its own model version every
``coverage_interval_s`` seconds on a background thread, with the same non-blocking SCANs as
``python -m upstream_service.embeddings coverage`` (never KEYS), so the dashboard can show
the backfill closing the gap. 0 disables it (the SCANs cost O(keys) per interval).
"""

from __future__ import annotations

import logging
import threading

from redis.exceptions import RedisError

from upstream_service.embeddings import coverage
from upstream_service.metrics import WorkerMetrics
from upstream_service.redis_client import RedisClient

log = logging.getLogger(__name__)


class CoverageReporter:
    """Args:
    client: the worker's Redis client.
    metrics: where the gauges live.
    model_version: the version whose coverage is reported.
    interval_s: seconds between measurements.
    """

    def __init__(
        self, client: RedisClient, metrics: WorkerMetrics, model_version: str, interval_s: float
    ) -> None:
        self.client = client
        self.metrics = metrics
        self.model_version = model_version
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def measure(self) -> dict[str, object]:
        """One measurement; sets the gauges and returns what ``coverage()`` found."""
        found = coverage(self.client, [self.model_version])
        mine = found[self.model_version]
        assert isinstance(mine, dict)
        self.metrics.users_with_history.set(found["users_with_history"])
        self.metrics.users_with_embedding.labels(self.model_version).set(mine["users"])
        self.metrics.embedding_coverage.labels(self.model_version).set(mine["coverage"])
        return found

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.measure()
            except (RedisError, OSError) as e:  # a later interval tries again
                log.warning("coverage measurement failed: %s", e)
            self._stop.wait(self.interval_s)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="upstream-coverage", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
