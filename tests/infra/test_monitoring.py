"""Monitoring as code: alert rules pass promtool, and no dashboard panel or alert names a
metric that the code does not export (a renamed metric would otherwise fail silently)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, CollectorRegistry

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "infra" / "prometheus" / "alerts.yml"
DASHBOARDS = sorted((ROOT / "infra" / "grafana" / "dashboards").glob("*.json"))
METRIC_RE = re.compile(r"\brecsys_[a-z0-9_]+\b")
SUFFIXES = {"counter": ["_total", "_created"], "histogram": ["_bucket", "_sum", "_count",
            "_created"], "summary": ["_sum", "_count", "_created"], "info": ["_info"]}


def _exported(registry: CollectorRegistry) -> set[str]:
    names = set()
    for family in registry.collect():
        names.add(family.name)
        names.update(family.name + s for s in SUFFIXES.get(family.type, []))
    return names


@pytest.fixture(scope="module")
def exported_metrics() -> set[str]:
    import stream.telemetry  # noqa: F401 - registers the worker's metrics in the default registry
    from serving.telemetry import ApiMetrics
    from trainer.telemetry import TrainerMetrics

    return (_exported(REGISTRY) | _exported(ApiMetrics().registry)
            | _exported(TrainerMetrics().registry))


def _named_in(text: str) -> set[str]:
    return set(METRIC_RE.findall(text))


def test_promtool_accepts_the_alert_rules():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: `make setup` installs Debian's prometheus package")
    result = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_config_is_valid():
    promtool = shutil.which("promtool")
    config = ROOT / "infra" / "prometheus" / "prometheus.yml"
    # The config names the rules at their in-container path; check it with a copy beside them.
    text = config.read_text().replace("/etc/prometheus/alerts.yml", str(ALERTS))
    local = ALERTS.parent / ".prometheus-check.yml"
    local.write_text(text)
    try:
        result = subprocess.run([promtool, "check", "config", str(local)], capture_output=True,
                                text=True, timeout=60)
    finally:
        local.unlink()
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_cover_what_sres_need():
    text = ALERTS.read_text()
    for metric in ("recsys_stream_consumer_lag", "recsys_stream_freshness_seconds_bucket",
                   "recsys_trainer_seconds_since_last_publish",
                   "recsys_api_request_duration_seconds_count", "recsys_api_fallbacks_total",
                   "recsys_stream_dead_letters_total", "recsys_api_events_delivery_failed_total",
                   "recsys_api_events_refused_total"):
        assert metric in text, metric


def test_lost_events_page_someone():
    import yaml

    rules = {rule["alert"]: rule for group in yaml.safe_load(ALERTS.read_text())["groups"]
             for rule in group["rules"]}
    lost = rules["RecsysEventsLost"]
    assert "recsys_api_events_delivery_failed_total" in lost["expr"]
    assert lost["labels"]["severity"] == "page" and "for" not in lost


def test_alerts_name_only_exported_metrics(exported_metrics):
    unknown = _named_in(ALERTS.read_text()) - exported_metrics
    assert not unknown, f"alerts name metrics the code does not export: {sorted(unknown)}"


def test_dashboards_name_only_exported_metrics(exported_metrics):
    assert DASHBOARDS, "no Grafana dashboard provisioned"
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
        assert exprs, path.name
        unknown = set().union(*(_named_in(e) for e in exprs)) - exported_metrics
        assert not unknown, f"{path.name} names metrics the code does not export: {sorted(unknown)}"


def test_metric_check_catches_a_renamed_metric(exported_metrics):
    assert "recsys_stream_freshness_secs_bucket" not in exported_metrics
    assert "recsys_stream_freshness_seconds_bucket" in exported_metrics
