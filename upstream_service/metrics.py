"""Prometheus metrics of one worker, in its own registry (several workers can share a process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Freshness spans Kafka, the batch wait and the encode: from tens of ms to minutes when behind.
FRESHNESS_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
ENCODE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events_consumed = Counter(
            "upstream_events_consumed_total", "Valid events consumed", ["action_type"], registry=r
        )
        self.events_duplicate = Counter(
            "upstream_events_duplicate_total",
            "Events already in the history (Kafka redelivery)",
            registry=r,
        )
        self.events_invalid = Counter(
            "upstream_events_invalid_total", "Events sent to the dead-letter topic", registry=r
        )
        self.triggers = Counter(
            "upstream_triggers_total", "Refresh triggers", ["reason"], registry=r
        )
        self.triggers_coalesced = Counter(
            "upstream_triggers_coalesced_total",
            "Triggers merged into a refresh already pending for the user",
            registry=r,
        )
        self.batch_size = Histogram(
            "upstream_encode_batch_size",
            "Users per encode batch",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.encode_seconds = Histogram(
            "upstream_encode_seconds", "Model time per batch", buckets=ENCODE_BUCKETS, registry=r
        )
        self.embeddings_written = Counter(
            "upstream_embeddings_written_total", "Embeddings written to Redis", registry=r
        )
        self.embeddings_stale = Counter(
            "upstream_embeddings_stale_total",
            "Embeddings not written because Redis held a newer one",
            registry=r,
        )
        self.freshness_seconds = Histogram(
            "upstream_freshness_seconds",
            "Trigger event timestamp to embedding written",
            buckets=FRESHNESS_BUCKETS,
            registry=r,
        )
        self.pending_refreshes = Gauge(
            "upstream_pending_refreshes", "Users waiting for an encode", registry=r
        )
        self.backfill_requests = Counter(
            "upstream_backfill_requests_total",
            "Refresh requests consumed from the refresh topic, by outcome "
            "(accepted, other_version, invalid)",
            ["outcome"],
            registry=r,
        )
        self.backfill_waiting = Gauge(
            "upstream_backfill_waiting", "Backfill requests waiting for spare capacity", registry=r
        )
        self.backfill_lag_seconds = Histogram(
            "upstream_backfill_lag_seconds",
            "Backfill request published to embedding written",
            buckets=FRESHNESS_BUCKETS,
            registry=r,
        )
        for outcome in ("accepted", "other_version", "invalid"):
            self.backfill_requests.labels(outcome).inc(0)  # dashboards read 0, not no data
        self.users_with_history = Gauge(
            "upstream_users_with_history", "Users with a stored history (SCAN)", registry=r
        )
        self.users_with_embedding = Gauge(
            "upstream_users_with_embedding",
            "Users with a history and an embedding of this model version (SCAN)",
            ["model_version"],
            registry=r,
        )
        self.embedding_coverage = Gauge(
            "upstream_embedding_coverage_ratio",
            "Share of users with a history that have an embedding of this model version",
            ["model_version"],
            registry=r,
        )
        self.consumer_lag = Gauge(
            "upstream_consumer_lag",
            "High watermark minus position",
            ["topic", "partition"],
            registry=r,
        )
        self.offsets_committed = Counter(
            "upstream_offset_commits_total", "Successful offset commits", registry=r
        )
        self.redis_errors = Counter(
            "upstream_redis_errors_total", "Redis errors", ["operation"], registry=r
        )
        self.kafka_errors = Counter(
            "upstream_kafka_errors_total", "Kafka errors", ["operation"], registry=r
        )

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """A sample's current value (0 when absent); for tests and the benchmark."""
        return self.registry.get_sample_value(name, labels or {}) or 0.0
