"""One training run: history -> weights -> select -> evaluate -> gate -> publish.

    1. apply pending user erasures to the history files (recsys.erasure); load the history
       (retention applied, removed items dropped) and its snapshot (offsets, newest event time)
    2. index users/items over the whole history; split at the holdout cutoff
       (recsys.split: the last `trainer_holdout_fraction` of the events)
    3. select (recsys.selection): every candidate of `trainer_candidates` tuned within
       `trainer_tune_budget_s` on validation data carved from the training part only (never
       the holdout), warm-started from the last version's best points; the search runs again
       only when the history grew by `trainer_retune_growth` or `trainer_retune_days` passed
       (otherwise those points are re-scored as they are). The validation winner, or
       popularity when nothing beats it
    4. every candidate's best point fitted on the whole training part and scored on the
       holdout (the leaderboard in the manifest); a winner that does not beat popularity on
       the holdout too gives way to popularity: the version then *is* popularity
    5. evaluate on the holdout the model in service (re-read from the model directory,
       whatever its kind: recsys.candidates.stored) and gate (trainer.gate); a rejected
       candidate is written to disk only, logged and counted
    6. on success, refit on the whole history (ALS warm-started from the candidate's factors,
       `trainer_refit_iterations` sweeps, the first one only over the users with events
       after the cutoff: recsys.als.refit_als; item-item models and popularity refitted in
       full); compute similar items and popularity, write the version (its `model_kind` says
       how serving scores it) to disk and to Redis, move the pointer, garbage-collect.
       A neural winner (recsys.candidates.neural) is published as fitted on the training
       part, without a refit (`_run_neural`; `trainer_model_kind=neural` forces that path
       without a selection)

Step 6's refit, popularity and similar lists only need the candidate, so a helper thread
starts them as soon as the fit ends, speculatively, while this thread runs steps 4-5
(dropped if the gate rejects; nothing of them is written before the verdict). Publishing then
writes the other Redis keys while the similar lists are still being encoded, and the version
directory in the helper; the pointer still moves last, after every key and the directory.

Leakage guard for step 4: a serving model refitted on the whole history has seen the part of
this holdout that is older than its own data (`trained_until_ms`). When that overlaps, both
models are compared on the holdout events after it, if at least `trainer_gate_min_users`
users have some; otherwise on the whole holdout, which can only favour the serving model
(the gate errs on the side of keeping what is in service).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import scipy.sparse as sp

from recsys.als import AlsParams, als_params, refit_als
from recsys.baselines import PopularityRecommender
from recsys.candidates import KIND_NEURAL, Fitted
from recsys.candidates.als_model import FittedAls, confidences
from recsys.candidates.neural import FittedNeural
from recsys.candidates.popularity import item_popularity
from recsys.candidates.stored import from_arrays
from recsys.errors import ModelIntegrityError, ModelNotFound, NotEnoughData
from recsys.eventtime import EventClock
from recsys.holdout_eval import align_items
from recsys.keys import Keys
from recsys.matrix import IndexedEvents, index_events, weight_matrix
from recsys.modelstore import SIMILAR_FORMAT, load_model, read_current_version
from recsys.neighbours import cosine_neighbour_lists
from recsys.quality import unique_sorted
from recsys.repeat import fit_weight, keep_seen_validation, repeat_rate
from recsys.selection import (
    NO_VALIDATION,
    Selection,
    config_from_settings,
    evaluate,
    fit_on,
    holdout_from_weights,
    retune_reason,
    select,
    training_sequences,
)
from recsys.sequence_model import UserTower, tower_manifest
from recsys.sequence_train import user_sequences
from recsys.settings import Settings
from recsys.spark_als import HistorySource, fit_als_spark_history, spark_options, spark_paths
from recsys.split import Holdout, cutoff_for
from recsys.topk import top_k, top_k_rows
from trainer.content import fit_version_content
from trainer.gate import GateDecision, decide
from trainer.history import HistoryStore, Snapshot
from trainer.lease import TrainerLease
from trainer.neural import evaluate_tower, version_arrays
from trainer.publish import (
    ModelArtifacts,
    ann_layout,
    collect_garbage,
    collect_orphans,
    current_and_previous,
    encode_similar,
    load_from_disk,
    new_version_id,
    publish,
    read_manifest,
    save_to_disk,
    wants_ann,
)
from trainer.telemetry import TrainerMetrics

log = logging.getLogger(__name__)

# What training reads of the history: event_id (a unique string per row, for dedupe only)
# would cost as much to decode as everything else together.
TRAIN_COLUMNS = ["user_id", "item_id", "event_type", "value", "timestamp"]


@dataclass
class RunResult:
    version: str
    published: bool
    decision: GateDecision
    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    serving_version: str | None
    serving_metrics: dict[str, float] | None
    manifest: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)  # wall seconds per stage
    cpu_timings: dict[str, float] = field(default_factory=dict)  # process CPU s per stage

    @property
    def seconds(self) -> float:
        return sum(self.timings.values())


@dataclass
class ServingModel:
    version: str
    model: Fitted | None  # laid out in the current item columns (None: a neural version)
    known: np.ndarray  # bool per current item column
    trained_until_ms: int
    tower: UserTower | None = None  # a neural version's user tower (its own item columns)


@dataclass
class FinalModel:
    """The model a published version is made of, with what is derived from it."""

    model: Fitted
    matrix: sp.csr_matrix  # the summed weights it was fitted on
    trained_until: int  # ms: the newest event it has seen
    popularity: dict[str, float]  # item id -> all-time popularity (items in the model)
    similar: Future[dict[str, bytes]]  # item id -> JSON [[item, score], ...] (recsys.keys)


def _nonzero_columns(matrix: sp.csr_matrix) -> np.ndarray:
    return np.bincount(matrix.indices, minlength=matrix.shape[1]) > 0


def _discard(job: Future) -> None:
    """Drop a speculative `_final_model` job: wait for it (its threads must not outlive the
    run) and log, not raise, its failure: nothing depends on it any more."""
    job.cancel()
    try:
        job.result().similar.cancel()
    except CancelledError:
        pass
    except Exception as exc:  # noqa: BLE001 - the result is unused
        log.info("speculative refit of a rejected candidate failed: %s", exc)


def history_store(settings: Settings, metrics: TrainerMetrics | None = None) -> HistoryStore:
    location = settings.trainer_history_uri or settings.data_dir / "history"
    return HistoryStore(location, settings.trainer_retention_days,
                        quarantine=settings.trainer_quarantine_dir,
                        on_quarantine=metrics.history_quarantined.inc if metrics else None)


def trainer_redis(settings: Settings) -> Any:
    """The trainer's Redis client: bounded socket and connect timeouts (a setting); one node
    or cluster as the settings say, checked against the server (ConfigError)."""
    from recsys.redis_client import check_redis_mode, redis_client

    client = redis_client(settings, socket_timeout=settings.trainer_redis_timeout_s,
                          socket_connect_timeout=settings.trainer_redis_timeout_s)
    check_redis_mode(client, settings)
    return client


class Trainer:
    """Runs training passes for one deployment (settings); holds its Redis client and metrics."""

    def __init__(self, settings: Settings, redis: Any | None = None,
                 metrics: TrainerMetrics | None = None, store: HistoryStore | None = None,
                 params: AlsParams | None = None, lease: TrainerLease | None = None) -> None:
        self.settings = settings
        self.keys = Keys.for_settings(settings)
        self.redis = redis or trainer_redis(settings)
        # With a lease, activation is fenced by its token (trainer.lease); tests and library
        # callers that run one trainer may go without.
        self.lease = lease
        self.metrics = metrics or TrainerMetrics()
        self.store = store or history_store(settings, self.metrics)
        self._pinned = params is not None  # explicit ALS parameters: no search
        self.params = params or als_params(settings, threads=settings.trainer_fit_threads)
        self.model_dir = settings.model_dir
        self.model_dir.mkdir(parents=True, exist_ok=True)
        self._clock = EventClock.from_seconds(settings.event_time_future_tolerance_s)
        self._history_files: list[Any] = []  # the files the last run loaded
        self._init_served_gauges()

    def _init_served_gauges(self) -> None:
        """The version in service when this trainer starts: its publish time, kind and holdout
        quality beside popularity's, so the dashboard shows them before this trainer's first
        publish (a restarted trainer, or one whose every run the gate rejects)."""
        try:
            version = read_current_version(self.redis, self.keys)
            raw = self.redis.get(self.keys.model_manifest(version)) if version else None
            if not raw:
                return
            manifest = orjson.loads(raw)
            created = manifest.get("created_at")
            if created:
                self.metrics.mark_published(datetime.fromisoformat(created).timestamp())
            gate = manifest.get("gate") or {}
            if manifest.get("model_kind"):
                self.metrics.set_served(manifest["model_kind"], gate.get("candidate"),
                                        gate.get("popularity"))
        except Exception as exc:  # noqa: BLE001 - only gauges' starting values
            log.debug("cannot read the served version's manifest: %s", exc)

    # --- the run -------------------------------------------------------------------------
    def run_once(self) -> RunResult:
        """One full pass. Any failure is counted and re-raised; serving is left untouched
        (the pointer only moves as the very last step)."""
        self.metrics.runs.inc()
        self._stage = "load"
        started = time.perf_counter()
        try:
            result = self._run()
        except Exception:
            self.metrics.run_failures.labels(stage=self._stage).inc()
            log.exception("training run failed at stage %s; serving model unchanged",
                          self._stage)
            raise
        self.metrics.run_seconds.observe(time.perf_counter() - started)
        return result

    @contextmanager
    def _timed(self, timings: dict[str, float], stage: str):  # noqa: ANN202
        # CPU seconds of the whole process (all threads) beside wall time: on a shared
        # machine they say what a stage costs, whatever else runs
        self._stage = stage
        t0, c0 = time.perf_counter(), time.process_time()
        yield
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - t0
        self._cpu[stage] = self._cpu.get(stage, 0.0) + time.process_time() - c0

    def _run(self) -> RunResult:
        # Helper threads beside this one (the machines are 2-core): the work that needs the
        # candidate but not the gate's verdict runs there while this thread evaluates.
        # numpy, implicit's solvers and socket I/O release the GIL, so they overlap; the
        # Python parts (fold-in batching, JSON, command packing) do not, which bounds the
        # gain (docs/benchmarks.md).
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="trainer") as pool:
            return self._run_in(pool)

    def _run_in(self, pool: ThreadPoolExecutor) -> RunResult:
        s, timings = self.settings, {}
        self._cpu: dict[str, float] = {}
        k = max(s.trainer_eval_k, int(s.trainer_gate_metric.partition("@")[2]))
        with self._timed(timings, "load"):
            self.apply_erasures()
            frame = self.store.load(columns=TRAIN_COLUMNS)
            removed = {m.decode() for m in self.redis.smembers(self.keys.erasure_items)}
            if removed:  # items deleted from the catalogue never come back in a retrain
                frame = frame.loc[~frame["item_id"].isin(removed)].reset_index(drop=True)
            if len(frame) < 2:
                raise NotEnoughData(f"the history holds {len(frame)} events; need more to train")
            # The decay reference and the snapshot's "newest event" never pass this machine's
            # clock (+ tolerance), whatever times older history files hold.
            latest = self._clock.reference(int(frame["timestamp"].max()))
            snapshot = Snapshot(self.store.offsets, latest, len(frame))
            # the files just read (a file quarantined while loading is no longer among them):
            # the Spark backend's final fit reads these same files (_spark_history)
            self._history_files = self.store.files()
        with self._timed(timings, "matrix"):
            events = index_events(frame, s.event_weights, s.trainer_time_decay_days, latest,
                                  s.negative_rating_max)
            purchase = (frame["event_type"] == "transaction").to_numpy(dtype=bool)
            del frame
            cutoff = cutoff_for(events.timestamps, s.trainer_holdout_fraction)
            train = events.timestamps < cutoff
            w_train = weight_matrix(events, train)
            if w_train.nnz == 0:
                raise NotEnoughData("no event before the holdout cutoff carries weight; "
                                    "nothing to train on")
            # Relevant = positive feedback after the cutoff (a disliked item is not a hit).
            test = ~train & (events.weights >= 0)
            holdout = holdout_from_weights(w_train, events.rows[test], events.cols[test],
                                           cutoff, s.trainer_eval_max_users, s.random_seed)
        self._record_sizes(events, w_train)
        if s.trainer_model_kind == "neural":
            return self._run_neural(pool, events, train, w_train, holdout, snapshot, k, timings)
        with self._timed(timings, "select"):
            selection, tuning = self._select(events, train)
        with self._timed(timings, "fit"):
            fitted = self._fit_leaderboard(selection, events, train, w_train, holdout, k)
            winner = self._confirm_on_holdout(selection, holdout)
            candidate = fitted[winner]
            buy_again = (None if isinstance(candidate, FittedNeural) else
                         self._buy_again(events, train, purchase, selection, k))
        if isinstance(candidate, FittedNeural):
            # a neural version is published as the fitted tower (no refit)
            return self._run_neural(pool, events, train, w_train, holdout, snapshot, k,
                                    timings, candidate, selection, tuning)
        self.metrics.fit_seconds.observe(candidate.seconds)
        with self._timed(timings, "evaluate"):
            # Speculative: the refit and the similar lists only need the candidate. Started
            # now they overlap the evaluation; if the gate rejects, they are dropped (a
            # rejection is rare and costs no more than before: nothing is written for it).
            final_job = pool.submit(self._final_model, pool, events, train, w_train,
                                    candidate, cutoff, latest)
            cand_metrics = selection.entry(winner).holdout or {}
            pop_metrics = selection.entry("popularity").holdout or {}
            serving, gate_holdout, gate_info, serving_metrics = \
                self._evaluate_serving(events, w_train, holdout, k)
            gate_cand = None
            if serving is not None:
                gate_cand = (cand_metrics if gate_holdout is holdout else
                             evaluate_candidate(candidate, gate_holdout, k))
            decision = decide(s.trainer_gate_metric, s.trainer_gate_tolerance,
                              gate_cand if gate_cand is not None else cand_metrics,
                              serving_metrics, pop_metrics)
        self._record_eval(cand_metrics, pop_metrics, serving_metrics, decision, selection)

        version = new_version_id()
        manifest = self._manifest(version, events, w_train, holdout, snapshot, candidate,
                                  cand_metrics, pop_metrics, serving, serving_metrics,
                                  gate_cand, gate_info, decision, k, selection, tuning)
        manifest["buy_again"] = buy_again
        if not decision.publish:
            _discard(final_job)
            with self._timed(timings, "save"):
                manifest.update(status="rejected", trained_until_ms=cutoff - 1)
                artifacts = self._artifacts(version, events, w_train, candidate, manifest)
                save_to_disk(self.model_dir, artifacts)
                self._collect_garbage()
            self.metrics.rejected.labels(reason="gate").inc()
            log.warning("candidate %s (%s) rejected: %s; serving %s stays", version, winner,
                        decision.reason, serving.version if serving else None)
            return RunResult(version, False, decision, cand_metrics, pop_metrics,
                             serving.version if serving else None, serving_metrics, manifest,
                             timings, self._cpu)

        with self._timed(timings, "refit"):  # what is left of it once the gate has decided
            final = final_job.result()
        if final.model is not candidate:
            self.metrics.fit_seconds.observe(final.model.seconds)
        fit_seconds = candidate.seconds + (final.model.seconds if final.model is not
                                           candidate else 0.0)
        self.metrics.last_fit_seconds.set(fit_seconds)
        manifest.update(status="published", trained_until_ms=final.trained_until,
                        fit_seconds=round(fit_seconds, 3))
        content = None
        if s.trainer_content:
            with self._timed(timings, "content"):
                content, manifest["content"] = fit_version_content(
                    s, self.redis, self.keys, events, train, candidate, final.model,
                    final.matrix, _nonzero_columns(final.matrix))
        with self._timed(timings, "publish"):
            manifest["timings"] = {k_: round(v, 3) for k_, v in timings.items()}
            artifacts = self._artifacts(version, events, final.matrix, final.model, manifest)
            artifacts.content = content
            ann = self._ann(pool, artifacts)
            # the directory is written beside the Redis keys, and complete before the
            # pointer moves (a published version is always on disk too)
            saved = pool.submit(save_to_disk, self.model_dir, artifacts)
            publish(self.redis, self.keys, artifacts, final.similar.result, final.popularity,
                    s.trainer_keep_versions, before_activate=saved.result,
                    fence=self.lease.fence if self.lease is not None else None, ann=ann)
            self.metrics.published.inc()
            self.metrics.mark_published()
            self.metrics.set_served(candidate.kind, decision.candidate, decision.popularity)
            self._collect_garbage()
        log.info("published %s (%s, %s): %s=%.4f (popularity %.4f, serving %s) in %.1fs",
                 version, winner, candidate.kind, s.trainer_gate_metric,
                 decision.candidate or float("nan"), decision.popularity or float("nan"),
                 decision.serving, sum(timings.values()))
        return RunResult(version, True, decision, cand_metrics, pop_metrics,
                         serving.version if serving else None, serving_metrics, manifest,
                         timings, self._cpu)

    def apply_erasures(self) -> int:
        """Remove the rows of users erased since the last run (recsys.erasure) from the
        history files, then take them off the pending set. Returns the rows removed."""
        users = [m.decode() for m in self.redis.smembers(self.keys.erasure_users)]
        if not users:
            return 0
        removed = self.store.erase(users)
        self.redis.srem(self.keys.erasure_users, *users)
        log.info("applied %d pending user erasures (%d history rows removed)", len(users),
                 removed)
        return removed

    def _collect_garbage(self) -> None:
        s = self.settings
        collect_garbage(self.redis, self.keys, self.model_dir, s.trainer_keep_versions)
        current, previous = current_and_previous(self.redis, self.keys)
        live = {v for v in [current, *previous[:s.trainer_keep_versions - 1]] if v}
        orphans = collect_orphans(self.redis, self.keys, live, s.trainer_orphan_grace_s)
        self.metrics.orphans_deleted.inc(len(orphans))

    def _run_neural(self, pool: ThreadPoolExecutor, events: IndexedEvents, train: np.ndarray,
                    w_train: sp.csr_matrix, holdout: Holdout, snapshot: Snapshot, k: int,
                    timings: dict[str, float], candidate: FittedNeural | None = None,
                    selection: Selection | None = None,
                    tuning: dict[str, Any] | None = None) -> RunResult:
        """A run whose candidate is the neural user tower (recsys.candidates.neural): the
        selection's winner (`candidate`, fitted on the training part), or, with
        `trainer_model_kind=neural`, fitted here without a selection. Evaluated and gated
        like the others; the fitted model is published (no refit: the tower reads the
        newest events anyway)."""
        s = self.settings
        if candidate is None:
            with self._timed(timings, "fit"):
                candidate = fit_on("neural", w_train, {}, config_from_settings(s),
                                   training_sequences(events, train))
        self.metrics.fit_seconds.observe(candidate.seconds)
        with self._timed(timings, "evaluate"):
            cand_metrics = evaluate_tower(holdout, candidate.tower, candidate.sequences, k)
            pop_metrics = (selection.entry("popularity").holdout if selection is not None
                           else None) or evaluate_candidate(
                fit_on("popularity", w_train, {}, config_from_settings(s)), holdout, k)
            serving, gate_holdout, gate_info, serving_metrics = \
                self._evaluate_serving(events, w_train, holdout, k)
            gate_cand = None
            if serving is not None:
                gate_cand = (cand_metrics if gate_holdout is holdout else
                             evaluate_tower(gate_holdout, candidate.tower, candidate.sequences,
                                            k))
            decision = decide(s.trainer_gate_metric, s.trainer_gate_tolerance,
                              gate_cand if gate_cand is not None else cand_metrics,
                              serving_metrics, pop_metrics)
        self._record_eval(cand_metrics, pop_metrics, serving_metrics, decision, selection)
        version = new_version_id()
        params = candidate.model.params
        manifest = self._manifest(version, events, w_train, holdout, snapshot, candidate,
                                  cand_metrics, pop_metrics, serving, serving_metrics,
                                  gate_cand, gate_info, decision, k, selection, tuning)
        cutoff = holdout.cutoff_ms
        manifest.update(
            model_kind="neural", factors=params.dim, refit_iterations=0,
            tower=tower_manifest(params.window, params.dim, params.hidden),
            neural={"epochs_run": candidate.model.epochs_run, "epochs": params.epochs,
                    "horizon": params.horizon, "learning_rate": params.learning_rate,
                    "dropout": params.dropout, "time_budget_s": params.time_budget_s,
                    "losses": [round(x, 4) for x in candidate.model.losses]},
            trained_until_ms=cutoff - 1, fit_seconds=round(candidate.seconds, 3))
        with self._timed(timings, "arrays"):
            item_mask = _nonzero_columns(w_train)
            arrays = version_arrays(events, item_mask, candidate)
            manifest.update(n_users=len(arrays.user_ids), n_items=len(arrays.item_ids))
            artifacts = ModelArtifacts(version, arrays.item_ids, arrays.item_factors,
                                       arrays.user_ids, arrays.user_factors, manifest,
                                       arrays.tower)
        served = serving.version if serving else None
        if not decision.publish:
            with self._timed(timings, "save"):
                manifest.update(status="rejected")
                save_to_disk(self.model_dir, artifacts)
                self._collect_garbage()
            self.metrics.rejected.labels(reason="gate").inc()
            log.warning("neural candidate %s rejected: %s; serving %s stays", version,
                        decision.reason, served)
            return RunResult(version, False, decision, cand_metrics, pop_metrics, served,
                             serving_metrics, manifest, timings, self._cpu)
        if not decision.beats_popularity:
            log.warning("neural candidate %s does not beat popularity on its holdout (%s): "
                        "published with beats_popularity=false", version, decision.reason)
        self.metrics.last_fit_seconds.set(candidate.seconds)
        with self._timed(timings, "publish"):
            manifest.update(status="published",
                            timings={k_: round(v, 3) for k_, v in timings.items()})
            popularity = self._popularity(events, item_mask)
            rows = self._similar_rows(arrays.item_ids, popularity)

            def similar() -> dict[str, bytes]:
                idx, scores = cosine_neighbour_lists(arrays.item_factors, s.trainer_similar_items,
                                                     rows)
                return encode_similar(arrays.item_ids, rows, idx, scores)

            ann = self._ann(pool, artifacts)
            saved = pool.submit(save_to_disk, self.model_dir, artifacts)
            publish(self.redis, self.keys, artifacts, pool.submit(similar).result, popularity,
                    s.trainer_keep_versions, before_activate=saved.result,
                    fence=self.lease.fence if self.lease is not None else None, ann=ann)
            self.metrics.published.inc()
            self.metrics.mark_published()
            self.metrics.set_served("neural", decision.candidate, decision.popularity)
            self._collect_garbage()
        log.info("published neural %s: %s=%.4f (popularity %.4f, serving %s) in %.1fs", version,
                 s.trainer_gate_metric, decision.candidate or float("nan"),
                 decision.popularity or float("nan"), decision.serving, sum(timings.values()))
        return RunResult(version, True, decision, cand_metrics, pop_metrics, served,
                         serving_metrics, manifest, timings, self._cpu)

    # --- selection -------------------------------------------------------------------------
    def _previous_tuning(self) -> dict[str, Any] | None:
        """The `tuning` record of the version in service (disk, else Redis)."""
        try:
            version = read_current_version(self.redis, self.keys)
            if not version:
                return None
            try:
                manifest = read_manifest(self.model_dir, version)
            except ModelNotFound:
                raw = self.redis.get(self.keys.model_manifest(version))
                manifest = orjson.loads(raw) if raw else {}
        except Exception as exc:  # noqa: BLE001 - a warm start is an optimisation only
            log.info("no previous tuning to start from: %s", exc)
            return None
        tuning = manifest.get("tuning")
        return tuning if isinstance(tuning, dict) else None

    def _select(self, events: IndexedEvents, train: np.ndarray
                ) -> tuple[Selection, dict[str, Any]]:
        """Tune (or reuse the last best points) and choose on validation carved from `train`."""
        s = self.settings
        start: dict[str, dict[str, Any]] = {"als": {
            "factors": self.params.factors, "regularization": self.params.regularization,
            "alpha": self.params.alpha, "iterations": self.params.iterations}}
        if self._pinned:
            # explicit ALS parameters: that point against the floor, no search
            config = config_from_settings(s, candidates=("popularity", "als"), search=False)
            return select(events, train, config, start), {"reason": "pinned parameters"}
        previous = self._previous_tuning()
        reason = retune_reason(previous, len(events), s.trainer_retune_growth,
                               s.trainer_retune_days)
        if previous:
            for name, params in (previous.get("params") or {}).items():
                if isinstance(params, dict):
                    start[name] = {**start.get(name, {}), **params}
        config = config_from_settings(s, search=reason is not None)
        selection = select(events, train, config, start)
        self.metrics.tune_seconds.set(selection.seconds)
        if reason is not None:
            tuning = {"n_events": len(events), "tuned_at": datetime.now(UTC).isoformat(),
                      "reason": reason, "params": selection.best_params()}
        else:
            tuning = {**(previous or {}), "reason": "reused (no growth, not due)",
                      "params": {**(previous or {}).get("params", {}),
                                 **selection.best_params()}}
        log.info("selection %s: %s", "searched" if reason else "reused points",
                 reason or tuning["reason"])
        return selection, tuning

    def _fit_leaderboard(self, selection: Selection, events: IndexedEvents, train: np.ndarray,
                         w_train: sp.csr_matrix, holdout: Holdout, k: int) -> dict[str, Fitted]:
        """Every candidate's best point fitted on the whole training part and scored on the
        holdout (reported in the leaderboard; only the winner's score decides anything)."""
        config = config_from_settings(self.settings)
        sequences = None
        if any(e.kind == KIND_NEURAL and not e.skipped for e in selection.leaderboard):
            sequences = training_sequences(events, train)
        fitted: dict[str, Fitted] = {}
        for entry in selection.leaderboard:
            if entry.skipped and entry.name != "popularity":
                continue
            try:
                model = fit_on(entry.name, w_train, entry.params, config, sequences)
                entry.holdout = evaluate_candidate(model, holdout, k)
            except Exception as exc:  # noqa: BLE001 - a candidate failing is recorded
                # a winner that fitted on validation and fails now is a fault to surface;
                # one chosen without a validation fit (NO_VALIDATION) fails here first, as
                # a candidate of a selection fails there: recorded, popularity published
                unvalidated = selection.validation == NO_VALIDATION
                if entry.name == "popularity" or (entry.name == selection.winner
                                                  and not unvalidated):
                    raise
                log.warning("candidate %s failed on the training part: %s", entry.name, exc)
                entry.skipped = f"failed on the training part: {exc}"
                if entry.name == selection.winner:
                    selection.winner = "popularity"
                    selection.reason = f"{entry.name} {entry.skipped}: popularity-only version"
                continue
            fitted[entry.name] = model
        return fitted

    def _buy_again(self, events: IndexedEvents, train: np.ndarray, purchase: np.ndarray,
                   selection: Selection, k: int) -> dict[str, Any]:
        """Repeat rate of the training part and, when it is high enough, the buy-again weight
        (recsys.repeat) fitted on a keeps-seen validation carve with the winner's point."""
        s = self.settings
        rate = repeat_rate(events, train, purchase)
        out: dict[str, Any] = {"repeat_rate": round(rate, 4), "weight": 0.0,
                               "min_rate": s.trainer_repeat_min_rate}
        if rate < s.trainer_repeat_min_rate:
            return out
        try:
            fit, holdout, own = keep_seen_validation(events, train, s.trainer_validation_fraction,
                                                     s.trainer_eval_max_users, s.random_seed)
            if holdout.n_users == 0:
                return out
            model = fit_on(selection.winner, fit, selection.winning.params,
                           config_from_settings(s))
            weight, scores = fit_weight(model.rank(holdout, k), own, holdout.relevant, k,
                                        holdout.n_items, selection.metric)
        except Exception as exc:  # noqa: BLE001 - buy-again is optional: 0 on failure
            log.warning("buy-again weight not fitted: %s", exc)
            return out
        out.update(weight=weight, validation={str(w): round(v, 4) for w, v in scores.items()},
                   validation_users=holdout.n_users)
        log.info("repeat rate %.3f: buy-again weight %g (%s %.4f vs %.4f without)", rate,
                 weight, selection.metric, scores[weight], scores[0.0])
        return out

    def _confirm_on_holdout(self, selection: Selection, holdout: Holdout) -> str:
        """The validation winner, unless it does not beat popularity on the holdout either:
        then the version is popularity (never a losing model plus a fallback)."""
        winner, metric = selection.winner, selection.metric
        if winner == "popularity" or holdout.n_users == 0:
            return winner
        won = (selection.entry(winner).holdout or {}).get(metric)
        pop = (selection.entry("popularity").holdout or {}).get(metric)
        if won is not None and pop is not None and won <= pop:
            selection.reason += (f"; on the holdout {winner} {won:.4f} <= popularity "
                                 f"{pop:.4f}: popularity is published")
            selection.winner = "popularity"
            log.warning("%s was chosen but does not beat popularity on the holdout (%.4f <= "
                        "%.4f): publishing popularity", winner, won, pop)
        return selection.winner

    def _evaluate_serving(self, events: IndexedEvents, w_train: sp.csr_matrix,
                          holdout: Holdout, k: int
                          ) -> tuple[ServingModel | None, Holdout, dict[str, Any],
                                     dict[str, float] | None]:
        """The model in service on this holdout (the gate's other side)."""
        serving = self._serving_model(events)
        if serving is None:
            return None, holdout, {"holdout": "full", "users": holdout.n_users}, None
        gate_holdout, gate_info = self._gate_holdout(events, w_train, holdout, serving)
        if serving.tower is not None:  # a neural version is judged by its own tower
            train = events.timestamps < holdout.cutoff_ms
            sequences = user_sequences(events.rows[train], events.cols[train],
                                       events.timestamps[train], events.item_ids,
                                       events.shape[0])
            return serving, gate_holdout, gate_info, evaluate_tower(
                gate_holdout, serving.tower, sequences, k, serving.known)
        restricted = replace(gate_holdout, allowed=gate_holdout.allowed & serving.known)
        serving_metrics = evaluate_candidate(serving.model, restricted, k)
        return serving, gate_holdout, gate_info, serving_metrics

    def _final_model(self, pool: ThreadPoolExecutor, events: IndexedEvents,
                     train: np.ndarray, w_train: sp.csr_matrix, candidate: Fitted,
                     cutoff: int, latest: int) -> FinalModel:
        """What a published version is made of: the candidate refitted on the whole history
        (ALS warm from the candidate), its popularity and its similar-item lists (a job of
        `pool`)."""
        s = self.settings
        final, matrix, trained_until = candidate, w_train, cutoff - 1
        if s.trainer_refit_iterations > 0:
            matrix = weight_matrix(events)
            trained_until = latest
            if isinstance(candidate, FittedAls) and candidate.backend == "implicit":
                # the rows that differ from the training part: users with events after it
                changed = unique_sorted(events.rows[~train])
                factors = refit_als(confidences(matrix, candidate.als.alpha), candidate.als,
                                    candidate.factors, changed, s.trainer_refit_iterations)
                final = FittedAls(candidate.als, factors, item_popularity(matrix),
                                  candidate.params, name=candidate.name)
            elif isinstance(candidate, FittedAls) and candidate.backend == "spark":
                # MLlib takes no starting factors: a full fit, on the history's Parquet
                # files read and weighed by Spark itself (recsys.spark_als)
                factors = fit_als_spark_history(self._spark_history(events, latest),
                                                candidate.als, spark_options(s))
                final = FittedAls(candidate.als, factors, item_popularity(matrix),
                                  candidate.params, name=candidate.name, backend="spark")
            else:
                # item-item models and popularity: a full fit on the whole history
                final = fit_on(candidate.name, matrix, candidate.params,
                               config_from_settings(s))
        item_mask = _nonzero_columns(matrix)
        item_ids = np.asarray(events.item_ids[item_mask]).astype(str)
        popularity = self._popularity(events, item_mask)
        rows = self._similar_rows(item_ids, popularity)
        export = final.export()

        def similar() -> dict[str, bytes]:
            if export.item_factors is not None:
                idx, scores = cosine_neighbour_lists(export.item_factors[item_mask],
                                            s.trainer_similar_items, rows)
            else:
                source = export
                if export.neighbour_rows is None:
                    # a popularity version still answers "similar items": cosine neighbours
                    source = fit_on("knn_cosine", matrix, {}, config_from_settings(s)).export()
                idx, scores = similar_from_neighbours(
                    _compact_neighbours(source.neighbour_rows, item_mask),
                    source.neighbour_weights[item_mask], s.trainer_similar_items, rows)
            return encode_similar(item_ids, rows, idx, scores)

        # its own job: publishing starts on the other keys as soon as the refit is there
        return FinalModel(final, matrix, trained_until, popularity, pool.submit(similar))

    # --- pieces ----------------------------------------------------------------------------
    def _spark_history(self, events: IndexedEvents, latest: int) -> HistorySource:
        """The history files this run loaded, with its index and rule inputs, for Spark.
        The index covers every id of the loaded frame (items taken off the catalogue are not
        in it, so Spark leaves their events out too); retention is the frame's oldest
        event: `load` keeps exactly the events at or after its horizon."""
        s = self.settings
        return HistorySource(
            paths=spark_paths(self.store.location, self._history_files),
            user_ids=events.user_ids, item_ids=events.item_ids,
            event_weights=s.event_weights, half_life_days=s.trainer_time_decay_days,
            reference_ms=latest, negative_rating_max=s.negative_rating_max,
            min_timestamp_ms=int(events.timestamps.min()))

    def _serving_model(self, events: IndexedEvents) -> ServingModel | None:
        """The version in service, re-read from the model directory (Redis as fallback)."""
        version = read_current_version(self.redis, self.keys)
        if version is None:
            return None
        tower = None
        try:
            stored = load_from_disk(self.model_dir, version, items_only=True)
            arrays, manifest, tower = stored.arrays(), stored.manifest, stored.tower
        except ModelNotFound:
            try:
                model = load_model(self.redis, self.keys, version)
            except (ModelNotFound, ModelIntegrityError) as exc:
                log.warning("serving version %s is unreadable (%s): gating as if none",
                            version, exc)
                return None
            manifest = model.manifest
            arrays = {"item_ids": np.asarray(model.item_ids), "item_factors": model.item_factors}
            if model.neighbour_rows is not None:
                arrays.update(neighbour_rows=model.neighbour_rows,
                              neighbour_weights=model.neighbour_weights)
            tower = dict(model.tower.weights) if model.tower is not None else None
        until = manifest.get("trained_until_ms",
                             manifest.get("snapshot", {}).get("latest_event_ms", 0))
        if manifest.get("model_kind") == "neural":
            if tower is None:
                log.warning("serving version %s is neural but its tower is unreadable: gating "
                            "as if none", version)
                return None
            aligned, known = align_items(np.asarray(arrays["item_ids"]).astype(str),
                                         arrays["item_factors"],
                                         np.asarray(events.item_ids).astype(str))
            return ServingModel(version, None, known, int(until or 0),
                                UserTower(aligned, tower))
        try:
            fitted, known = from_arrays(manifest, arrays, np.asarray(events.item_ids))
        except (KeyError, ValueError) as exc:
            log.warning("serving version %s cannot be scored (%s): gating as if none",
                        version, exc)
            return None
        return ServingModel(version, fitted, known, int(until or 0))

    def _gate_holdout(self, events: IndexedEvents, w_train: sp.csr_matrix,
                      holdout: Holdout, serving: ServingModel) -> tuple[Holdout, dict[str, Any]]:
        if serving.trained_until_ms < holdout.cutoff_ms:
            return holdout, {"holdout": "full", "users": holdout.n_users}
        after = (events.timestamps > serving.trained_until_ms) & (events.weights >= 0)
        fresh = holdout_from_weights(w_train, events.rows[after], events.cols[after],
                                     holdout.cutoff_ms, self.settings.trainer_eval_max_users,
                                     self.settings.random_seed)
        if fresh.n_users >= self.settings.trainer_gate_min_users:
            return fresh, {"holdout": "after_serving_data", "users": fresh.n_users,
                           "after_ms": serving.trained_until_ms}
        log.info("serving model %s was trained on part of this holdout and only %d users "
                 "have newer events: gating on the whole holdout (favours serving)",
                 serving.version, fresh.n_users)
        return holdout, {"holdout": "full_overlapping_serving", "users": holdout.n_users}

    def _ann(self, pool: ThreadPoolExecutor, artifacts: ModelArtifacts
             ) -> Callable[[], bytes | None] | None:
        """Large catalogues: the approximate-search layout, built beside the other keys."""
        s = self.settings
        if not wants_ann(artifacts, s.ann_min_items):
            return None
        return pool.submit(ann_layout, artifacts.item_factors, s.ann_lists,
                           s.trainer_fit_threads).result

    def _artifacts(self, version: str, events: IndexedEvents, matrix: sp.csr_matrix,
                   model: Fitted, manifest: dict[str, Any]) -> ModelArtifacts:
        # Users and items without any (non-zero) interaction in the fitted matrix carry no
        # learnt vector: leave them out rather than serve noise.
        users = np.diff(matrix.indptr) > 0
        items = _nonzero_columns(matrix)
        export = model.export()
        manifest.update(n_users=int(users.sum()), n_items=int(items.sum()),
                        model_kind=export.kind, candidate=model.name,
                        candidate_params=dict(model.params), **export.manifest)
        item_ids = np.asarray(events.item_ids[items]).astype(str)
        if export.item_factors is not None and export.user_factors is not None:
            return ModelArtifacts(
                version=version, item_ids=item_ids, item_factors=export.item_factors[items],
                user_ids=np.asarray(events.user_ids[users]).astype(str),
                user_factors=export.user_factors[users], manifest=manifest,
                item_scores=export.item_scores[items])
        manifest["factors"] = 0
        artifacts = ModelArtifacts(
            version=version, item_ids=item_ids,
            item_factors=np.zeros((len(item_ids), 0), dtype=np.float32),
            user_ids=np.empty(0, dtype=str), user_factors=np.zeros((0, 0), dtype=np.float32),
            manifest=manifest, item_scores=export.item_scores[items])
        if export.neighbour_rows is not None and export.neighbour_weights is not None:
            artifacts.neighbour_rows = _compact_neighbours(export.neighbour_rows, items)
            artifacts.neighbour_weights = np.where(artifacts.neighbour_rows >= 0,
                                                   export.neighbour_weights[items], 0.0
                                                   ).astype(np.float32)
        return artifacts

    def _similar_rows(self, item_ids: np.ndarray, popularity: dict[str, float]
                      ) -> np.ndarray:
        """Items that get a stored similar list: all, or the most popular
        `trainer_similar_max_items` (serving computes the tail's lists from the factors)."""
        limit = self.settings.trainer_similar_max_items
        n_items = len(item_ids)
        if not limit or n_items <= limit:
            return np.arange(n_items)
        score = np.array([popularity.get(str(i), 0.0) for i in item_ids])
        return np.sort(top_k(score, limit))

    def _popularity(self, events: IndexedEvents, item_mask: np.ndarray) -> dict[str, float]:
        scores = PopularityRecommender(events.shape[1]).fit(events.rows, events.cols,
                                                            events.weights).scores
        ids = events.item_ids
        return {str(ids[i]): float(scores[i]) for i in np.flatnonzero(item_mask & (scores > 0))}

    def _manifest(self, version: str, events: IndexedEvents, w_train: sp.csr_matrix,
                  holdout: Holdout, snapshot: Snapshot, candidate: Fitted,
                  cand_metrics: dict[str, float], pop_metrics: dict[str, float],
                  serving: ServingModel | None, serving_metrics: dict[str, float] | None,
                  gate_cand: dict[str, float] | None, gate_info: dict[str, Any],
                  decision: GateDecision, k: int, selection: Selection | None,
                  tuning: dict[str, Any] | None) -> dict[str, Any]:
        s = self.settings
        return {
            "version": version,
            "created_at": datetime.now(UTC).isoformat(),
            "model_kind": candidate.kind, "candidate": candidate.name,
            "candidate_params": dict(candidate.params),
            "refit_iterations": s.trainer_refit_iterations,
            "event_weights": dict(s.event_weights),
            "negative_rating_max": s.negative_rating_max,
            "time_decay_days": s.trainer_time_decay_days,
            "n_events": len(events), "n_users": len(events.user_ids),
            "n_items": len(events.item_ids), "train_nonzeros": int(w_train.nnz),
            "metrics": cand_metrics, "baseline_metrics": pop_metrics,
            "serving_version": serving.version if serving else None,
            "serving_metrics": serving_metrics,
            "beats_popularity": decision.beats_popularity,
            "gate": {**decision.as_manifest(), **gate_info,
                     "candidate_metrics": gate_cand if gate_cand is not None else cand_metrics},
            "holdout": {"cutoff_ms": holdout.cutoff_ms, "fraction": s.trainer_holdout_fraction,
                        "users": holdout.n_users, "pairs": holdout.n_test_pairs, "k": k},
            "selection": selection.as_manifest() if selection is not None else None,
            "tuning": tuning,
            "snapshot": snapshot.as_manifest(),
            "similar_items_n": s.trainer_similar_items,
            "similar_format": SIMILAR_FORMAT,
            "similar_items_max": s.trainer_similar_max_items,
            "candidate_fit_seconds": round(candidate.seconds, 3),
        }

    def _record_sizes(self, events: IndexedEvents, w_train: sp.csr_matrix) -> None:
        self.metrics.training_events.set(len(events))
        self.metrics.training_users.set(events.shape[0])
        self.metrics.training_items.set(events.shape[1])
        self.metrics.training_nonzeros.set(w_train.nnz)

    def _record_eval(self, cand: dict[str, float], pop: dict[str, float],
                     serving: dict[str, float] | None, decision: GateDecision,
                     selection: Selection | None = None) -> None:
        self.metrics.set_eval("candidate", cand)
        self.metrics.set_eval("popularity", pop)
        if serving:
            self.metrics.set_eval("serving", serving)
        self.metrics.beats_popularity.set(1.0 if decision.beats_popularity else 0.0)
        if selection is not None:
            self.metrics.candidates_scored.set(sum(1 for e in selection.leaderboard
                                                   if not e.skipped))


def evaluate_candidate(model: Fitted, holdout: Holdout, k: int) -> dict[str, float]:
    return evaluate(model, holdout, k)


def _compact_neighbours(rows: np.ndarray, item_mask: np.ndarray) -> np.ndarray:
    """Neighbour rows of the kept items (`item_mask`), re-indexed into the kept items' order
    (-1 for a neighbour that is not kept)."""
    new_index = np.cumsum(item_mask) - 1
    kept = np.asarray(rows)[item_mask].astype(np.int64)
    ok = kept >= 0
    ok[ok] = item_mask[kept[ok]]
    return np.where(ok, new_index[np.maximum(kept, 0)], -1).astype(np.int32)


def similar_from_neighbours(rows: np.ndarray, weights: np.ndarray, n: int,
                            which: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Similar-item lists from an item-item model: each item's positive neighbours, best
    first (EASE's negative weights say "not with this", not "similar")."""
    sub_rows = np.asarray(rows)[which].astype(np.int64)
    sub_w = np.where(sub_rows >= 0, np.asarray(weights)[which], -np.inf)
    sub_w = np.where(sub_w > 0, sub_w, -np.inf)
    order, scores = top_k_rows(sub_w, n, return_scores=True)  # -1 pads: no positive weight
    if sub_rows.shape[1] == 0:
        return order, scores
    idx = np.where(order >= 0, np.take_along_axis(sub_rows, np.maximum(order, 0), axis=1), -1)
    return idx, scores
