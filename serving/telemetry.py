"""Every Prometheus metric of the API, under one namespace: `recsys_api_`.

Each app instance has its own registry (tests build several apps in one process); `/metrics`
exposes it. Label values are bounded: routes are templates (`/v1/users/{user_id}/...`), never
raw paths, and fallback reasons come from a fixed vocabulary.

Several worker processes (`recsys serve --workers N`): prometheus-client's multiprocess mode.
When `PROMETHEUS_MULTIPROC_DIR` is set (the CLI sets it to a fresh temporary directory before
uvicorn spawns the workers), every process writes its values to files there and `/metrics`
serves `exposed`, a registry whose `MultiProcessCollector` reads all the files: counters and
histograms are summed over the processes, gauges follow their `multiprocess_mode`.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess

NAMESPACE = "recsys_api"

# Sub-millisecond resolution at the bottom: the hot path takes a few milliseconds (measured
# figures: docs/benchmarks.md), so the quantiles that matter fall between fine buckets.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25,
                   0.5, 1.0, 2.5)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class _WithoutRetiredVersions:
    """Multiprocess exposure without the model-version series that no process serves any
    more: a label set cannot be removed from another process's file, so a retired version is
    set to 0 there (`set_model`) and dropped here, instead of one stale series per version
    ever served."""

    def __init__(self, collector: Any) -> None:
        self._collector = collector

    def collect(self) -> Any:
        for family in self._collector.collect():
            if family.name == f"{NAMESPACE}_model_version_info":
                family.samples = [s for s in family.samples if s.value != 0]
            yield family


def multiprocess_dir() -> str | None:
    """The multiprocess directory, if this process writes its metrics there.

    prometheus-client decides at import time from the same variables (it also accepts the
    legacy lower-case name)."""
    return os.environ.get(MULTIPROC_ENV) or os.environ.get(MULTIPROC_ENV.lower()) or None


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._multiproc_dir = multiprocess_dir()
        # What /metrics serves: in multiprocess mode all processes' values, read from their
        # files (the app's own registry would show only this process).
        self.exposed = self.registry
        if self._multiproc_dir is not None:
            self.exposed = CollectorRegistry()
            self.exposed.register(_WithoutRetiredVersions(
                multiprocess.MultiProcessCollector(None, path=self._multiproc_dir)))
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        r = self.registry
        self.request_seconds = Histogram(
            "request_duration_seconds", "HTTP request latency by route template and status.",
            ["method", "route", "status"], namespace=NAMESPACE, registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.responses = Counter(
            "recommendations_total", "Recommendation responses by endpoint and source.",
            ["endpoint", "source"], namespace=NAMESPACE, registry=r,
        )
        self.erasures = Counter(
            "user_erasures_total", "Users erased through DELETE /v1/users/{user_id}.",
            namespace=NAMESPACE, registry=r,
        )
        self.fallbacks = Counter(
            "fallbacks_total", "Responses served from a fallback, by reason.",
            ["reason"], namespace=NAMESPACE, registry=r,
        )
        self.model_version = Gauge(
            "model_version_info", "1 for the model version being served.",
            ["version"], namespace=NAMESPACE, registry=r,
            # 1 if any live process serves that version (both show 1 while processes switch).
            multiprocess_mode="livemax",
        )
        self.model_items = Gauge(
            "model_items", "Items in the served model version.", namespace=NAMESPACE, registry=r,
            multiprocess_mode="livemostrecent",  # the latest load among the live processes
        )
        self.fresh_items = Gauge(
            "fresh_items", "Items of the stream's item fold-in merged into the served version "
            "(items the version's own factors do not have).", namespace=NAMESPACE, registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.fresh_item_merges = Counter(
            "fresh_item_merges_total", "Merges of new or updated stream item vectors into the "
            "in-memory item matrix.", namespace=NAMESPACE, registry=r,
        )
        self.model_loaded_at = Gauge(
            "model_loaded_timestamp_seconds", "When the served version was loaded (epoch s).",
            namespace=NAMESPACE, registry=r, multiprocess_mode="livemax",
        )
        self.factor_load_seconds = Histogram(
            "factor_load_seconds", "Time to load a model version's item factors from Redis.",
            namespace=NAMESPACE, registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
        )
        self.model_switches = Counter(
            "model_switches_total", "Model versions swapped in.", namespace=NAMESPACE, registry=r,
        )
        self.model_load_failures = Counter(
            "model_load_failures_total", "Model versions that could not be loaded.",
            namespace=NAMESPACE, registry=r,
        )
        self.redis_errors = Counter(
            "redis_errors_total", "Redis operations that failed (timeouts, refused connections).",
            ["operation"], namespace=NAMESPACE, registry=r,
        )
        self.events = Counter(
            "events_total", "Events received over HTTP: accepted (produced) or rejected.",
            ["result", "reason"], namespace=NAMESPACE, registry=r,
        )
        self.limited = Counter(
            "requests_limited_total", "Requests refused before handling: reason body_size "
            "(413, api_max_body_bytes) or in_flight (503, api_max_in_flight).",
            ["reason"], namespace=NAMESPACE, registry=r,
        )
        self.events_clamped = Counter(
            "events_clamped_total", "Events whose time was set to their arrival (reason "
            "future: more than event_time_future_tolerance_s ahead of the API's clock).",
            ["reason"], namespace=NAMESPACE, registry=r,
        )
        self.delivery_failed = Counter(
            "events_delivery_failed_total", "Events answered 202 that Kafka never acknowledged "
            "within api_produce_delivery_timeout_s: lost (alert RecsysEventsLost).",
            namespace=NAMESPACE, registry=r,
        )
        self.produce_refused = Counter(
            "events_refused_total", "POSTed events answered 503 because Kafka could not take "
            "them (reason queue_full | broker_stalled | no_producer).",
            ["reason"], namespace=NAMESPACE, registry=r,
        )
        self.produce_pending = Gauge(
            "events_pending", "Events queued for Kafka or in flight, not yet acknowledged.",
            namespace=NAMESPACE, registry=r, multiprocess_mode="livesum",
        )
        self.catalog_items_unavailable = Gauge(
            "catalog_unavailable_items", "Items marked unavailable in the catalog.",
            namespace=NAMESPACE, registry=r,
            # Every process polls the same catalog: the latest refresh is the current answer.
            multiprocess_mode="livemostrecent",
        )
        self.scoring_batch_size = Histogram(
            "scoring_batch_size", "Personalised requests scored together in one pass over the "
            "item factors (1 when alone; larger under load).",
            namespace=NAMESPACE, registry=r, buckets=(1, 2, 4, 8, 16, 32),
        )
        self.impressions = Counter(
            "impressions_total", "Served recommendation lists by endpoint and what became of "
            "their impression record: queued (for the impressions topic), dropped (the "
            "producer could not take it; the response was served anyway), off (setting).",
            ["endpoint", "outcome"], namespace=NAMESPACE, registry=r,
        )
        self.impressions_delivery = Counter(
            "impressions_delivery_total", "Impression records acknowledged by Kafka "
            "(delivered) or given up on (failed).", ["outcome"], namespace=NAMESPACE, registry=r,
        )
        self.unhandled_errors = Counter(
            "unhandled_errors_total", "Exceptions that reached the last-resort handler.",
            namespace=NAMESPACE, registry=r,
        )

    def _child(self, metric: Any, labels: tuple[str, ...]) -> Any:
        # `.labels()` validates and hashes on every call (twice per request; its cost is in
        # docs/benchmarks.md); the children are looked up here instead. Bounded like the
        # labels themselves.
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            if len(self._children) > 4096:
                self._children.clear()
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self._child(self.request_seconds, (method, route, str(status))).observe(seconds)

    def count_impression(self, endpoint: str, outcome: str) -> None:
        self._child(self.impressions, (endpoint, outcome)).inc()

    def count_response(self, endpoint: str, source: str) -> None:
        self._child(self.responses, (endpoint, source)).inc()

    def set_model(self, version: str, n_items: int, loaded_at: float, previous: str | None
                  ) -> None:
        if previous is not None and previous != version:
            if self._multiproc_dir is not None:
                # Removing a label set is not implemented in multiprocess mode (the value
                # stays in this process's file): say 0 instead.
                self.model_version.labels(previous).set(0)
            else:
                try:
                    self.model_version.remove(previous)
                except KeyError:
                    pass
        self.model_version.labels(version).set(1)
        self.model_items.set(n_items)
        self.model_loaded_at.set(loaded_at)

    def mark_process_dead(self) -> None:
        """At worker shutdown: drop this process's live gauges (`live*` modes) from /metrics.
        Its counters and histograms stay in the totals, as they should."""
        if self._multiproc_dir is not None:
            multiprocess.mark_process_dead(os.getpid(), self._multiproc_dir)
