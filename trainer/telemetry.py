"""Prometheus metrics of the trainer, all under the namespace `recsys_trainer_`.

    recsys_trainer_runs_total                       training runs started
    recsys_trainer_run_failures_total{stage}        runs that raised (serving left untouched)
    recsys_trainer_published_total                  versions made current
    recsys_trainer_rejected_total{reason}           candidates the gate kept out of service
    recsys_trainer_fit_seconds                      histogram of ALS fit time (all fits)
    recsys_trainer_run_seconds                      histogram of a whole run
    recsys_trainer_last_fit_seconds                 the last run's fit time
    recsys_trainer_training_events / _users / _items / _nonzeros   size of the last training set
    recsys_trainer_eval_metric{metric, model}       last evaluation; model = candidate |
                                                    serving | popularity; metric = ndcg@10 ...
    recsys_trainer_beats_popularity                 1 when the last candidate beat popularity
    recsys_trainer_served_model{kind}               1 for the kind of the version last published
                                                    (als | neural | item_item | popularity)
    recsys_trainer_served_quality{model}            gate metric on the holdout of the version last
                                                    published (model = served) and of popularity
    recsys_trainer_tune_seconds                     the last run's candidate search (or re-score)
    recsys_trainer_candidates_scored                candidates on the last leaderboard with scores
    recsys_trainer_seconds_since_last_publish       computed at scrape time (NaN before any)
    recsys_trainer_history_events_total             events appended to the history
    recsys_trainer_history_invalid_total{reason}    consumed messages skipped as invalid
    recsys_trainer_history_duplicates_total         events skipped as already stored
    recsys_trainer_history_clamped_total{reason}    event times clamped to arrival (future)
    recsys_trainer_history_quarantined_total        unreadable history files moved aside
    recsys_trainer_orphans_deleted_total            versions whose keys were only in Redis
                                                    (staged, never activated) and were deleted

Each TrainerMetrics owns its registry, so two trainers in one process (tests) do not clash.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from recsys.modelstore import MODEL_KINDS

NAMESPACE = "recsys_trainer"
_FIT_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


class TrainerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r, ns = self.registry, NAMESPACE
        self.runs = Counter("runs", "Training runs started.", namespace=ns, registry=r)
        self.run_failures = Counter("run_failures", "Training runs that failed.", ["stage"],
                                    namespace=ns, registry=r)
        self.published = Counter("published", "Model versions made current.", namespace=ns,
                                 registry=r)
        self.rejected = Counter("rejected", "Candidates kept out of service by the gate.",
                                ["reason"], namespace=ns, registry=r)
        self.fit_seconds = Histogram("fit_seconds", "ALS fit time.", namespace=ns, registry=r,
                                     buckets=_FIT_BUCKETS)
        self.run_seconds = Histogram("run_seconds", "Whole training run time.", namespace=ns,
                                     registry=r, buckets=_FIT_BUCKETS)
        self.last_fit_seconds = Gauge("last_fit_seconds", "Fit time of the last run.",
                                      namespace=ns, registry=r)
        self.training_events = Gauge("training_events", "Events in the last training set.",
                                     namespace=ns, registry=r)
        self.training_users = Gauge("training_users", "Users in the last training set.",
                                    namespace=ns, registry=r)
        self.training_items = Gauge("training_items", "Items in the last training set.",
                                    namespace=ns, registry=r)
        self.training_nonzeros = Gauge("training_nonzeros", "Non-zero (user, item) pairs.",
                                       namespace=ns, registry=r)
        self.eval_metric = Gauge("eval_metric", "Holdout metrics of the last evaluation.",
                                 ["metric", "model"], namespace=ns, registry=r)
        self.beats_popularity = Gauge("beats_popularity",
                                      "1 when the last candidate beat popularity.",
                                      namespace=ns, registry=r)
        self.served_model = Gauge("served_model", "1 for the kind of the version last "
                                  "published, 0 for the other kinds.", ["kind"],
                                  namespace=ns, registry=r)
        self.served_quality = Gauge("served_quality", "Gate metric on the holdout of the "
                                    "version last published and of popularity.", ["model"],
                                    namespace=ns, registry=r)
        self.tune_seconds = Gauge("tune_seconds", "Candidate search time of the last run.",
                                  namespace=ns, registry=r)
        self.candidates_scored = Gauge("candidates_scored", "Candidates scored on the last "
                                       "leaderboard.", namespace=ns, registry=r)
        self.history_events = Counter("history_events", "Events appended to the history.",
                                      namespace=ns, registry=r)
        self.history_invalid = Counter("history_invalid", "Invalid messages skipped.",
                                       ["reason"], namespace=ns, registry=r)
        self.history_clamped = Counter(
            "history_clamped", "Event times clamped to their arrival (reason future: beyond "
            "event_time_future_tolerance_s).", ["reason"], namespace=ns, registry=r)
        self.history_duplicates = Counter("history_duplicates", "Duplicate events skipped.",
                                          namespace=ns, registry=r)
        self.history_quarantined = Counter(
            "history_quarantined", "Unreadable history files moved to the quarantine folder.",
            namespace=ns, registry=r)
        self.orphans_deleted = Counter(
            "orphans_deleted", "Model versions found only in Redis (a publish that failed or "
            "was killed before activation) whose keys were deleted.", namespace=ns, registry=r)
        self._last_publish: float | None = None
        since = Gauge("seconds_since_last_publish", "Seconds since a version was last made "
                      "current (NaN before the first).", namespace=ns, registry=r)
        since.set_function(self._seconds_since_publish)

    def _seconds_since_publish(self) -> float:
        return math.nan if self._last_publish is None else time.time() - self._last_publish

    def mark_published(self, at: float | None = None) -> None:
        self._last_publish = time.time() if at is None else at

    def set_eval(self, model: str, metrics: Mapping[str, float]) -> None:
        for name, value in metrics.items():
            self.eval_metric.labels(metric=name, model=model).set(value)

    def set_served(self, kind: str, quality: float | None, popularity: float | None) -> None:
        for name in MODEL_KINDS:  # a bounded label set: every kind, one of them at 1
            self.served_model.labels(kind=name).set(1.0 if name == kind else 0.0)
        if quality is not None:
            self.served_quality.labels(model="served").set(quality)
        if popularity is not None:
            self.served_quality.labels(model="popularity").set(popularity)

    def serve(self, port: int, addr: str = "0.0.0.0") -> int:  # noqa: S104 - a metrics port
        """Expose /metrics over HTTP; returns the bound port (0 picks a free one)."""
        self._server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return int(self._server.server_port)

    def stop_serving(self) -> None:
        server, self._server = getattr(self, "_server", None), None
        if server is not None:
            server.shutdown()
            server.server_close()
