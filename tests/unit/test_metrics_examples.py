"""The shipped Grafana dashboard and Prometheus config only name series caslb exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from lb.metrics import Metrics

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported_names() -> set[str]:
    """Every sample name a fresh Metrics can expose (families are listed even when empty)."""
    text = generate_latest(Metrics(CollectorRegistry()).registry).decode()
    names = set()
    for family in text_string_to_metric_families(text):
        names.update(family.name + s for s in SUFFIXES.get(family.type, ("",)))
    return names


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((EXAMPLES / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    return exprs


def test_dashboard_uses_only_exported_series() -> None:
    exported = exported_names()
    used = {n for e in dashboard_exprs() for n in re.findall(r"\bcaslb_[a-z_]+", e)}
    assert len(used) >= 15
    assert used <= exported, sorted(used - exported)


def test_dashboard_panels_have_unique_ids_and_fit_the_grid() -> None:
    dashboard = json.loads((EXAMPLES / "grafana-dashboard.json").read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for p in dashboard["panels"]:
        grid = p["gridPos"]
        assert grid["x"] + grid["w"] <= 24, p["title"]
        assert p["targets"], p["title"]


def test_prometheus_config_scrapes_the_admin_metrics_path() -> None:
    text = (EXAMPLES / "prometheus.yml").read_text()
    assert "metrics_path: /metrics" in text
    assert re.search(r'targets: \["127\.0\.0\.1:\d+"\]', text)
