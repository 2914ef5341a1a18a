"""The Grafana dashboards: generated from loadtests.reports.dashboards, well-formed, and every query
names only metrics that the services register."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from loadtests.reports.dashboards import DASHBOARD_DIR, DASHBOARDS, panel_queries, render
from ranker_service.metrics import Metrics
from upstream_service.metrics import WorkerMetrics

PROVISIONING = DASHBOARD_DIR.parent / "provisioning"
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gauge": ("",),
    "info": ("_info",),
}
PROMQL_WORDS = {
    "sum", "rate", "by", "le", "histogram_quantile", "ignoring", "group_left", "or", "vector",
    "count", "outcome", "action_type", "reason", "partition", "model_version",
}  # fmt: skip


def exposed_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name a registry can expose (labelled metrics included before first use)."""
    names = set()
    for family in registry.collect():
        names |= {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}
    return names


@pytest.fixture(scope="module")
def registered() -> set[str]:
    return exposed_names(Metrics().registry) | exposed_names(WorkerMetrics().registry)


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARD_DIR.glob("*.json"))


def test_committed_json_is_what_the_generator_writes() -> None:
    assert {p.stem for p in dashboard_files()} == set(DASHBOARDS)
    for path in dashboard_files():
        assert path.read_text() == render(DASHBOARDS[path.stem]), (
            f"{path} is stale: run `python -m loadtests.reports.dashboards`"
        )


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.stem)
def test_dashboard_is_well_formed(path: Path) -> None:
    board = json.loads(path.read_text())
    assert board["uid"] and board["title"] and board["panels"]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "prometheus"
        assert panel["targets"], panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids))


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_query_names_registered_metrics(name: str, registered: set[str]) -> None:
    prefix = "ranker_" if name == "ranker" else "upstream_"
    for where, expr in panel_queries(DASHBOARDS[name]):
        assert expr.count("(") == expr.count(")"), f"{where}: unbalanced {expr}"
        without_labels = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", "", expr)
        metrics = set(re.findall(r"\b[a-z][a-z0-9_]*_[a-z0-9_]+\b", without_labels))
        metrics -= PROMQL_WORDS
        assert metrics, f"{where}: no metric in {expr}"
        unknown = metrics - registered
        assert not unknown, f"{where}: {sorted(unknown)} are not registered by the services"
        assert all(m.startswith(prefix) for m in metrics), f"{where}: {metrics}"


def test_dashboards_cover_what_the_issue_asks_for() -> None:
    titles = {
        name: " ".join(p["title"].lower() for p in board["panels"])
        for name, board in DASHBOARDS.items()
    }
    for word in ("request rate", "error rate", "latency", "model", "redis", "candidates",
                 "outcomes", "age"):  # fmt: skip
        assert word in titles["ranker"], word
    for word in ("events", "invalid", "triggers", "coalescing", "batch size", "encode latency",
                 "freshness", "lag", "embeddings written"):  # fmt: skip
        assert word in titles["upstream"], word
    exprs = " ".join(e for _, e in panel_queries(DASHBOARDS["ranker"]))
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (le) (rate(ranker_request_duration" in exprs


def test_provisioning_points_at_the_dashboards() -> None:
    yaml = pytest.importorskip("yaml")
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "llatte.yml").read_text())
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    sources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    assert sources["datasources"][0]["uid"] == "prometheus"
    assert sources["datasources"][0]["url"] == "http://prometheus:9090"
