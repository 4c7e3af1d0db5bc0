"""shell.harness: parsing, sums over label sets and PromQL's histogram_quantile."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from shell.harness import delta, histogram_quantile, parse_metrics, total


def _exposition(observations: list[float], events: dict[str, int]) -> str:
    registry = CollectorRegistry()
    hist = Histogram("lat_seconds", "x", ["part"], buckets=(0.1, 0.2, 0.4), registry=registry)
    for n, value in enumerate(observations):
        hist.labels(str(n % 2)).observe(value)
    counter = Counter("events", "x", ["outcome"], registry=registry)
    for outcome, n in events.items():
        counter.labels(outcome).inc(n)
    return generate_latest(registry).decode()


def test_quantiles_sum_label_sets_and_interpolate_inside_the_bucket():
    samples = parse_metrics(_exposition([0.05] * 50 + [0.15] * 40 + [0.3] * 10, {"ok": 7}))
    # 100 observations: the 50th is the last of (0, 0.1]; the 95th is half-way into (0.2, 0.4]
    assert histogram_quantile(samples, "lat_seconds", 0.5) == pytest.approx(0.1)
    assert histogram_quantile(samples, "lat_seconds", 0.95) == pytest.approx(0.3)
    assert histogram_quantile(samples, "lat_seconds", 0.5, part="0") is not None
    assert histogram_quantile(samples, "missing", 0.5) is None
    assert total(samples, "events_total", outcome="ok") == 7
    assert total(samples, "events_total", outcome="invalid") == 0


def test_delta_leaves_only_what_happened_between_two_scrapes():
    before = parse_metrics(_exposition([0.05] * 10, {"ok": 3}))
    after = parse_metrics(_exposition([0.05] * 10 + [0.3] * 10, {"ok": 5}))
    between = delta(after, before)
    assert total(between, "events_total") == 2
    assert histogram_quantile(between, "lat_seconds", 0.5) == pytest.approx(0.3)
