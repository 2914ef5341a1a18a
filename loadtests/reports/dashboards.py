"""The Grafana dashboards of both services, as code: ``python -m loadtests.reports.dashboards``.

Writes ``loadtests/monitoring/grafana/dashboards/{ranker,upstream}.json`` (provisioned by
docker-compose.yml). The JSON is committed; ``tests/stack/test_dashboards.py`` checks that it is
what this module generates, that every query names metrics the services register, and (against
a real Prometheus scraping a real local stack) that every query returns data.

Queries are written to return a value even when nothing went wrong (``or vector(0)`` on error
counters that have no series until the first error), so an empty panel always means "no data
is reaching Prometheus", never "all is well".
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DASHBOARD_DIR = Path(__file__).resolve().parents[1] / "monitoring" / "grafana" / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
RATE = "$__rate_interval"


@dataclass
class Panel:
    title: str
    queries: dict[str, str]  # legend -> PromQL
    unit: str = "short"
    description: str = ""
    width: int = 8
    stack: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def quantiles(metric: str, selector: str = "", qs: tuple[float, ...] = (0.5, 0.95, 0.99)) -> dict:
    """P50/P95/P99 lines of a histogram, over all instances."""
    bucket = f"{metric}_bucket{{{selector}}}" if selector else f"{metric}_bucket"
    return {
        f"p{round(q * 100)}": f"histogram_quantile({q}, sum by (le) (rate({bucket}[{RATE}])))"
        for q in qs
    }


def mean(metric: str, selector: str = "") -> str:
    sel = f"{{{selector}}}" if selector else ""
    return f"sum(rate({metric}_sum{sel}[{RATE}])) / sum(rate({metric}_count{sel}[{RATE}]))"


RANKER_PANELS = [
    Panel(
        "Request rate",
        {"{{outcome}}": f"sum by (outcome) (rate(ranker_request_duration_seconds_count[{RATE}]))"},
        unit="reqps",
        stack=True,
        description="POST /v1/rank per second by outcome (ok, client_error, server_error).",
    ),
    Panel(
        "Error rate",
        {
            "server errors": "(sum(rate(ranker_request_duration_seconds_count"
            f'{{outcome="server_error"}}[{RATE}])) or vector(0)) / '
            f"sum(rate(ranker_request_duration_seconds_count[{RATE}]))",
            "client errors": "(sum(rate(ranker_request_duration_seconds_count"
            f'{{outcome="client_error"}}[{RATE}])) or vector(0)) / '
            f"sum(rate(ranker_request_duration_seconds_count[{RATE}]))",
        },
        unit="percentunit",
        description="Share of requests answered 5xx (server) and 4xx (client).",
    ),
    Panel(
        "Latency (server side)",
        quantiles("ranker_request_duration_seconds", 'outcome="ok"'),
        unit="s",
        description="P50/P95/P99 of successful requests, from the histogram buckets.",
    ),
    Panel(
        "Model time",
        {
            **quantiles("ranker_model_duration_seconds", qs=(0.5, 0.99)),
            "queue p99": "histogram_quantile(0.99, sum by (le) "
            f"(rate(ranker_model_queue_duration_seconds_bucket[{RATE}])))",
        },
        unit="s",
        description="Scoring time per request, and the wait for the inference thread.",
    ),
    Panel(
        "Micro-batching",
        {
            **quantiles("ranker_model_batch_size", qs=(0.5, 0.99)),
            "mean batch": mean("ranker_model_batch_size"),
            "queue p50": "histogram_quantile(0.5, sum by (le) "
            f"(rate(ranker_model_queue_duration_seconds_bucket[{RATE}])))",
        },
        description="Requests scored together per model call (1 = alone), and the median "
        "wait for the inference thread (queue p99 is on Model time).",
    ),
    Panel(
        "Server CPU by thread",
        {"{{thread}}": f"sum by (thread) (rate(ranker_thread_cpu_seconds_total[{RATE}]))"},
        description="Cores busy per thread role, over all replicas: event_loop (HTTP, "
        "validation, the Redis read, responses), inference (features and the model), other. "
        "An event loop near 1 core per replica is saturated whatever the model costs.",
    ),
    Panel(
        "Redis time",
        {
            "p50": "histogram_quantile(0.5, sum by (le) "
            f"(rate(ranker_redis_duration_seconds_bucket[{RATE}])))",
            "p99": "histogram_quantile(0.99, sum by (le) "
            f"(rate(ranker_redis_duration_seconds_bucket[{RATE}])))",
        },
        unit="s",
        description="The one pipelined Redis read per request (embedding + history).",
    ),
    Panel(
        "Candidates per request",
        {
            **quantiles("ranker_candidates_per_request", qs=(0.5, 0.99)),
            "mean": mean("ranker_candidates_per_request"),
        },
        description="How many candidates each request asked to score.",
    ),
    Panel(
        "Upstream embedding outcomes",
        {
            "{{outcome}}": f"sum by (outcome) (rate(ranker_embedding_lookups_total[{RATE}])) "
            "/ ignoring(outcome) group_left "
            f"sum(rate(ranker_embedding_lookups_total[{RATE}]))"
        },
        unit="percentunit",
        stack=True,
        width=12,
        description="Share of lookups by outcome: hit (used), missing, stale, "
        "version_mismatch, timeout, unavailable, corrupt, disabled.",
    ),
    Panel(
        "Degraded requests by feature and reason",
        {
            "{{feature}} {{reason}}": "sum by (feature, reason) "
            f"(rate(ranker_degraded_requests_total[{RATE}]))"
        },
        unit="reqps",
        stack=True,
        width=12,
        description="Requests ranked without the stored history, the upstream embedding or "
        "content vectors, by reason (redis_timeout, redis_unavailable, corrupt_record, "
        "version_mismatch, stale, missing); each response lists them in `degraded`.",
    ),
    Panel(
        "Content-vector cache",
        {
            "{{result}}": f"sum by (result) (rate(ranker_content_cache_lookups_total[{RATE}]))",
            "evicted {{reason}}": "sum by (reason) "
            f"(rate(ranker_content_cache_evictions_total[{RATE}]))",
        },
        unit="ops",
        width=12,
        description="Content-id lookups answered by the in-process cache (hit) or read from "
        "Redis (miss), and entries dropped (capacity, expired, version).",
    ),
    Panel(
        "Upstream embedding age",
        quantiles("ranker_embedding_age_seconds", qs=(0.5, 0.99)),
        unit="s",
        width=12,
        description="Request time minus the embedding's computed_at (found records).",
    ),
    Panel(
        "In flight and model",
        {
            "in flight": "sum(ranker_requests_in_flight)",
            "replicas per model version": "count by (model_version) (ranker_model_info)",
            "replicas per precision": "count by (precision) (ranker_model_info)",
        },
        description="Requests being served; how many replicas run each model version, and "
        "in which precision (float32, bfloat16 or int8).",
    ),
]

UPSTREAM_PANELS = [
    Panel(
        "Events consumed by type",
        {"{{action_type}}": f"sum by (action_type) (rate(upstream_events_consumed_total[{RATE}]))"},
        unit="ops",
        stack=True,
        description="Valid events appended to histories, per second.",
    ),
    Panel(
        "Invalid and duplicate events",
        {
            "invalid (dead-lettered)": f"sum(rate(upstream_events_invalid_total[{RATE}]))",
            "duplicates (redelivery)": f"sum(rate(upstream_events_duplicate_total[{RATE}]))",
        },
        unit="ops",
    ),
    Panel(
        "Refresh triggers and coalescing",
        {
            "{{reason}}": f"sum by (reason) (rate(upstream_triggers_total[{RATE}]))",
            "coalesced": f"sum(rate(upstream_triggers_coalesced_total[{RATE}]))",
        },
        unit="ops",
        description="Triggers per second; coalesced = merged into a refresh already pending.",
    ),
    Panel(
        "Encode batch size",
        {
            **quantiles("upstream_encode_batch_size", qs=(0.5, 0.99)),
            "mean": mean("upstream_encode_batch_size"),
        },
        description="Users per model call.",
    ),
    Panel(
        "Encode latency",
        quantiles("upstream_encode_seconds"),
        unit="s",
        description="Model time per batch.",
    ),
    Panel(
        "Freshness",
        quantiles("upstream_freshness_seconds", qs=(0.5, 0.99)),
        unit="s",
        description="Trigger event timestamp to embedding written in Redis.",
    ),
    Panel(
        "Consumer lag",
        {
            "total": "sum(upstream_consumer_lag)",
            "partition {{partition}}": "sum by (partition) (upstream_consumer_lag)",
        },
        description="High watermark minus position, summed over the group's workers.",
    ),
    Panel(
        "Embeddings written",
        {
            "written": f"sum(rate(upstream_embeddings_written_total[{RATE}]))",
            "skipped (newer in Redis)": f"sum(rate(upstream_embeddings_stale_total[{RATE}]))",
            "pending refreshes": "sum(upstream_pending_refreshes)",
        },
        unit="ops",
    ),
    Panel(
        "Backfill",
        {
            **{
                f"lag {k}": v
                for k, v in quantiles("upstream_backfill_lag_seconds", qs=(0.5, 0.99)).items()
            },
            "accepted /s": (
                f'sum(rate(upstream_backfill_requests_total{{outcome="accepted"}}[{RATE}]))'
            ),
            "other version /s": (
                f'sum(rate(upstream_backfill_requests_total{{outcome="other_version"}}[{RATE}]))'
            ),
            "waiting": "sum(upstream_backfill_waiting)",
        },
        description="Backfill requests (upstream_service.backfill) per second by outcome, "
        "those waiting for spare encoder capacity, and the lag from publish to embedding "
        "written (s). Event freshness (the Freshness panel) should not move during a backfill.",
    ),
    Panel(
        "Embedding coverage by model version",
        {"{{model_version}}": "max by (model_version) (upstream_embedding_coverage_ratio)"},
        description="Share of users with a history that have an embedding of each upstream "
        "model version (SCANs every UPSTREAM_COVERAGE_INTERVAL_S). During a rollout, switch "
        "the rankers to version B once its coverage has caught up with A's.",
        unit="percentunit",
    ),
    Panel(
        "Errors and commits",
        {
            "redis errors": f"sum(rate(upstream_redis_errors_total[{RATE}])) or vector(0)",
            "kafka errors": f"sum(rate(upstream_kafka_errors_total[{RATE}])) or vector(0)",
            "offset commits": f"sum(rate(upstream_offset_commits_total[{RATE}]))",
        },
        unit="ops",
    ),
]


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    return {
        "id": panel_id,
        "type": "timeseries",
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {
            "defaults": {
                "unit": panel.unit,
                "custom": {
                    "fillOpacity": 20 if panel.stack else 5,
                    "stacking": {"mode": "normal" if panel.stack else "none"},
                },
            },
            "overrides": [],
        },
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": q, "legendFormat": leg}
            for i, (leg, q) in enumerate(panel.queries.items())
        ],
        **panel.extra,
    }


def dashboard(uid: str, title: str, panels: list[Panel]) -> dict[str, Any]:
    items, x, y = [], 0, 0
    for i, panel in enumerate(panels, 1):
        if x + panel.width > 24:
            x, y = 0, y + 8
        items.append(_panel_json(panel, i, x, y))
        x += panel.width
    return {
        "uid": uid,
        "title": title,
        "tags": ["llatte"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "editable": False,
        "panels": items,
        "templating": {"list": []},
    }


DASHBOARDS = {
    "ranker": dashboard("llatte-ranker", "LLaTTE ranker", RANKER_PANELS),
    "upstream": dashboard("llatte-upstream", "LLaTTE upstream worker", UPSTREAM_PANELS),
}


def render(board: dict[str, Any]) -> str:
    return json.dumps(board, indent=2) + "\n"


def panel_queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title / legend, expr) of every query in a dashboard's JSON."""
    return [
        (f"{panel['title']} / {target.get('legendFormat', '')}", target["expr"])
        for panel in board["panels"]
        for target in panel.get("targets", [])
    ]


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    DASHBOARD_DIR.mkdir(parents=True, exist_ok=True)
    for name, board in DASHBOARDS.items():
        path = DASHBOARD_DIR / f"{name}.json"
        path.write_text(render(board))
        log.info("wrote %s (%d panels)", path, len(board["panels"]))


if __name__ == "__main__":
    main()
