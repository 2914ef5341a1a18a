"""Prometheus metrics, all prefixed ``ranker_``, on a registry owned by the app.

A registry per app (not the global default) lets tests build many apps in one process.
"""

from __future__ import annotations

from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ranker_service.schemas import DegradationReason, DegradedFeature
from ranker_service.thread_cpu import ThreadCpu

M = TypeVar("M", Counter, Gauge, Histogram)

# Fine from 1 to 200 ms so that P50/P95/P99 can be read off the buckets; coarse beyond.
LATENCY_BUCKETS_S = (
    0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.008, 0.010, 0.012, 0.015, 0.020, 0.025,
    0.030, 0.035, 0.040, 0.050, 0.060, 0.070, 0.080, 0.090, 0.100, 0.120, 0.140, 0.160,
    0.180, 0.200, 0.250, 0.300, 0.400, 0.500, 0.750, 1.0, 2.5, 5.0,
)  # fmt: skip
REDIS_BUCKETS_S = (
    0.0002, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.010, 0.015, 0.020, 0.030, 0.050,
    0.100, 0.250,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)
CANDIDATE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 300, 500, 750, 1000, 2000, 5000)
AGE_BUCKETS_S = (
    1, 10, 60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 3 * 86400, 7 * 86400,
    30 * 86400,
)  # fmt: skip


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[int, tuple[str, ...]], object] = {}
        r = self.registry
        self.request_seconds = Histogram(
            "ranker_request_duration_seconds",
            "POST /v1/rank latency in the server, by outcome (ok, client_error, server_error).",
            ["outcome"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.model_seconds = Histogram(
            "ranker_model_duration_seconds",
            "Model scoring time per request (feature tensors to probabilities).",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.queue_seconds = Histogram(
            "ranker_model_queue_duration_seconds",
            "Time a request waited for the inference thread.",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.batch_size = Histogram(
            "ranker_model_batch_size",
            "Requests scored together in one model call (cross-request micro-batching).",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.stage_cpu_seconds = Counter(
            "ranker_stage_cpu_seconds",
            "Thread CPU of /v1/rank by stage (redis: the read, on the event loop; features: "
            "decode and tensors, score: the model call, both in the inference thread; respond).",
            ["stage"],
            registry=r,
        )
        self.thread_cpu = ThreadCpu()
        r.register(self.thread_cpu)
        self.redis_seconds = Histogram(
            "ranker_redis_duration_seconds",
            "The pipelined Redis read per request, by outcome (ok, timeout, unavailable).",
            ["outcome"],
            buckets=REDIS_BUCKETS_S,
            registry=r,
        )
        self.candidates = Histogram(
            "ranker_candidates_per_request",
            "Candidates scored per request.",
            buckets=CANDIDATE_BUCKETS,
            registry=r,
        )
        self.embedding_lookups = Counter(
            "ranker_embedding_lookups",
            "Upstream embedding lookups by outcome (hit, missing, stale, version_mismatch, "
            "timeout, unavailable, corrupt, disabled).",
            ["outcome"],
            registry=r,
        )
        self.embedding_age_seconds = Histogram(
            "ranker_embedding_age_seconds",
            "Age of the upstream embedding found (request time - computed_at), used or stale.",
            buckets=AGE_BUCKETS_S,
            registry=r,
        )
        self.content_lookups = Counter(
            "ranker_content_lookups",
            "Candidates' content-id lookups by outcome (hit: from the cache or Redis; missing, "
            "corrupt, timeout, unavailable: scored without content).",
            ["outcome"],
            registry=r,
        )
        self.content_cache_lookups = Counter(
            "ranker_content_cache_lookups",
            "In-process content-vector cache lookups by result (hit, miss).",
            ["result"],
            registry=r,
        )
        self.content_cache_evictions = Counter(
            "ranker_content_cache_evictions",
            "Content-vector cache entries dropped, by reason (capacity, expired, version).",
            ["reason"],
            registry=r,
        )
        self.content_cache_entries = Gauge(
            "ranker_content_cache_entries", "Content vectors held in the cache.", registry=r
        )
        self.degraded_requests = Counter(
            "ranker_degraded_requests",
            "Requests ranked without a feature (history, embedding, content), by reason "
            "(redis_timeout, redis_unavailable, corrupt_record, version_mismatch, stale, "
            "missing).",
            ["feature", "reason"],
            registry=r,
        )
        self.history_corrupt_records = Counter(
            "ranker_history_corrupt_records",
            "History records skipped because they do not decode.",
            registry=r,
        )
        self.in_flight = Gauge(
            "ranker_requests_in_flight", "POST /v1/rank requests being served.", registry=r
        )
        self.model_reloads = Counter(
            "ranker_model_reloads", "Checkpoint reloads by result.", ["result"], registry=r
        )
        self.model_info = Gauge(
            "ranker_model_info",
            "1 for the loaded model version (with the upstream version it expects and the "
            "precision it scores in: float32, bfloat16 or int8).",
            ["model_version", "upstream_model_version", "precision"],
            registry=r,
        )
        # Every known label value starts at 0, so rate() and the dashboards read 0 (not "no
        # data") until the first degraded request or cache eviction.
        for feature in DegradedFeature:
            for reason in DegradationReason:
                self.degraded_requests.labels(feature.value, reason.value)
        for result in ("hit", "miss"):
            self.content_cache_lookups.labels(result)
        for reason in ("capacity", "expired", "version"):
            self.content_cache_evictions.labels(reason)

    def child(self, metric: M, *values: str) -> M:
        """``metric.labels(*values)``, kept: the serving path records about a dozen labelled
        series per request, and ``labels()`` validates, locks and hashes each time.

        Not for metrics whose series are removed (``model_info`` is cleared on reload).
        """
        key = (id(metric), values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found  # type: ignore[return-value]

    def set_model(
        self, model_version: str, upstream_model_version: str, precision: str = "float32"
    ) -> None:
        self.model_info.clear()
        self.model_info.labels(model_version, upstream_model_version, precision).set(1)
