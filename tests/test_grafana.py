"""deploy/grafana/storm-notifier.json: an importable dashboard of the metrics we export."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client.metrics import MetricWrapperBase

from notifier.metrics import Metrics

DASHBOARD = Path(__file__).parent.parent / "deploy" / "grafana" / "storm-notifier.json"
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
METRIC = re.compile(r"\bnotifier_[a-z_]+\b")
GROUPING = re.compile(r"\b(?:by|on|without|ignoring)\s*\(([^)]*)\)")
MATCHER = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)\s*\"")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
SCRAPE_LABELS = {"job", "instance", "le"}  # added by Prometheus, or by a histogram's buckets


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside rows included."""
    out: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def _queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression: the panels' targets and the variables' queries."""
    exprs = [t["expr"] for p in _panels(dashboard) for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        query = variable["query"]
        exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


def _exported() -> dict[str, set[str]]:
    """Each series name ``/metrics`` exports, with the labels of its metric."""
    metrics = Metrics()
    names: dict[str, set[str]] = {}
    for metric in vars(metrics).values():
        if isinstance(metric, MetricWrapperBase):
            assert metric._type is not None
            for suffix in SUFFIXES[metric._type]:
                names[metric._name + suffix] = set(metric._labelnames)
    return names


def test_the_dashboard_is_importable_with_a_prometheus_input() -> None:
    """Valid JSON in Grafana's classic model: a current schemaVersion, a DS_PROMETHEUS input
    that every panel and query uses, unique panel ids, panels that do not overlap."""
    dashboard = _dashboard()
    assert dashboard["schemaVersion"] >= 39  # Grafana 11 and later
    assert dashboard["uid"] == "storm-notifier"
    assert dashboard["id"] is None
    inputs = {i["name"]: i for i in dashboard["__inputs"]}
    assert inputs["DS_PROMETHEUS"]["type"] == "datasource"
    assert inputs["DS_PROMETHEUS"]["pluginId"] == "prometheus"
    panels = _panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])}  # fmt: skip
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        assert all(t["datasource"] == DATASOURCE for t in panel["targets"]), panel["title"]
        assert panel.get("description"), panel["title"]
    for variable in dashboard["templating"]["list"]:
        assert variable["datasource"] == DATASOURCE


def test_every_query_uses_metrics_and_labels_the_registry_exports() -> None:
    """Each metric name a query reads is a series of ``notifier.metrics.Metrics``, each label
    it groups or matches on is one of those metrics' labels, and each ``$variable`` exists."""
    dashboard = _dashboard()
    exported = _exported()
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    used: set[str] = set()
    for expr in _queries(dashboard):
        assert expr.count("(") == expr.count(")"), expr
        assert expr.count("{") == expr.count("}"), expr
        names = set(METRIC.findall(expr))
        assert names, expr
        unknown = names - set(exported)
        assert not unknown, f"{expr}: {sorted(unknown)} not in notifier/metrics.py"
        used |= names
        labels = set().union(*(exported[name] for name in names)) | SCRAPE_LABELS
        for group in GROUPING.findall(expr):
            for label in filter(None, (part.strip() for part in group.split(","))):
                assert label in labels, f"{expr}: no label {label!r}"
        for label in MATCHER.findall(expr):
            assert label in labels, f"{expr}: no label {label!r}"
        for variable in re.findall(r"\$(?!__)(\w+)", expr):
            assert variable in variables, f"{expr}: no variable ${variable}"
    wanted = {
        "notifier_viewers", "notifier_stream_viewers", "notifier_poll_duration_seconds_bucket",
        "notifier_poll_phase_seconds_bucket", "notifier_events_total", "notifier_sink_lag",
        "notifier_deliveries_total", "notifier_dead_letters", "notifier_sink_paused",
    }  # fmt: skip
    assert wanted <= used, sorted(wanted - used)
