"""Monitoring as code: the dashboards, the alert rules and the metrics table, checked
without running them (tests/test_monitoring_e2e.py runs them against a real Prometheus)."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.monitoring import DASHBOARDS, DEPLOY, ROOT, alert_rules, dashboard_queries, exported, metric_names, with_bool

METRICS_DOC = ROOT / "docs" / "metrics.md"


@pytest.fixture(scope="module")
def names() -> set[str]:
    return exported()


def test_six_dashboards_with_unique_panel_ids_and_a_query_on_every_panel():
    titles = set()
    for path in DASHBOARDS:
        dash = json.loads(path.read_text())  # valid JSON, or this raises
        titles.add(dash["title"])
        ids = [p["id"] for p in dash["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: panel ids repeat: {ids}"
        for panel in dash["panels"]:
            exprs = [t.get("expr", "").strip() for t in panel.get("targets", [])]
            assert exprs and all(exprs), f"{path.name}: panel {panel['title']!r} has no query"
            assert panel["datasource"]["uid"] == "prometheus", f"{path.name}: {panel['title']!r}"
    assert {t.split(": ", 1)[1] for t in titles} == {
        "overview", "drift", "accuracy", "throughput, latency and lag", "labeling queue and labelers", "model versions"}
    assert len({json.loads(p.read_text())["uid"] for p in DASHBOARDS}) == len(DASHBOARDS)


def test_every_metric_the_dashboards_and_alerts_name_is_exported(names):
    queries = dashboard_queries() + [(rule["alert"], rule["expr"]) for rule in alert_rules()]
    unknown = {}
    for where, expr in queries:
        for name in metric_names(expr):
            if name.startswith("activestream_") and name not in names:
                unknown.setdefault(name, where)
    assert not unknown, f"metrics no exporter exports: {unknown}"


def test_grafana_provisioning_names_the_dashboards_and_the_datasource_they_use():
    source = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert [d["uid"] for d in source["datasources"]] == ["prometheus"]
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/activestream.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


ALERTS = {"ActivestreamDriftDetected", "ActivestreamAccuracyDrop", "ActivestreamLabelQueueGrowing",
          "ActivestreamLabelQueueStale", "ActivestreamDeadLetterSpike", "ActivestreamConsumerLagGrowing",
          "ActivestreamWorkerDown", "ActivestreamNoPromotedVersion"}


def test_every_alert_has_for_a_severity_and_a_summary_and_one_threshold():
    rules = alert_rules()
    assert {r["alert"] for r in rules} == ALERTS
    for rule in rules:
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert " bool " in with_bool(rule["expr"]), rule["alert"]


def test_metrics_table_lists_every_exported_metric_and_the_readme_links_it(names):
    table = METRICS_DOC.read_text()
    ours = {n for n in names if n.startswith("activestream_") and not n.endswith(("_bucket", "_sum", "_count"))}
    listed = set(re.findall(r"`(activestream_[a-z_]+)", table))
    base = {n.removesuffix("_total") for n in listed}
    missing = {n for n in ours if n not in listed and n not in base}
    assert not missing, f"docs/metrics.md does not list {sorted(missing)}"
    assert "docs/metrics.md" in (ROOT / "README.md").read_text()


def test_no_metric_labels_a_model_version():
    """One series per version would grow for ever: a version is a gauge's value or a slot."""
    from prometheus_client import REGISTRY

    import activestream.labeling.metrics  # noqa: F401 - registers label serve's metrics
    import activestream.streams.metrics  # noqa: F401 - registers the workers' metrics

    # The client keeps a metric's label names only privately; a label set is what we check.
    labeled = {getattr(c, "_name", ""): getattr(c, "_labelnames", ()) for c in REGISTRY._collector_to_names}
    ours = {name: labels for name, labels in labeled.items() if name.startswith("activestream_")}
    assert ours, "no activestream metric registered"
    assert not {name for name, labels in ours.items() if "version" in labels}
