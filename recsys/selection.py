"""Tune every candidate on validation data carved from the training part, within a time
budget, and pick the one to serve. Shared by the trainer, `recsys tune` and `recsys evaluate`.

    validation  = carve(training events)          never the holdout: the caller passes only
                                                  the training part's mask
    for each candidate: fit its start point (the last run's best, else its defaults), score
    then, while the budget lasts: coordinate steps (one value up/down on each axis of the
    candidate's space) from the best point, best-scoring candidates first, keeping a step
    that beats the candidate's best by `min_lift` (1 %), until a full round improves nothing
    winner      = the best validation score; popularity when no candidate beats it by
                  `min_lift` (1 %)

Carving ("time", the trainer's): the last `validation_fraction` of the training events by
time, filtered like the holdout (recsys.split.build_holdout). ("random", for the per-user
stratified protocol): per user with >= 2 items, a seeded random `validation_fraction` of
their items.

The budget bounds the search, not the start points: every candidate's start point is scored
(one fit each, cheapest kinds first), so a run always compares every candidate. A search
trial is not started when its predicted time (the candidate's last fit, x1.5) would overrun
what is left of the budget after a reserve for what the trainer does next: every
candidate's best point fitted once more on the whole training part (RESERVE x the sum of
their fit times on the validation fit part).

One personal candidate and no search (a pinned run, or `trainer_candidates` naming one
candidate between searches): there is nothing to choose, so no validation carve and no fit;
the candidate at its start point wins and the caller's holdout checks it against popularity.

Sequence candidates (neural) also read the order of the training events
(`FitContext.sequences`, built here only when one is on the board), and their training
stops at the budget's deadline (after at least one epoch).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.candidates import (
    KIND_ITEM_ITEM,
    KIND_NEURAL,
    KIND_POPULARITY,
    FitContext,
    Fitted,
    registry,
)
from recsys.errors import RecsysError
from recsys.matrix import IndexedEvents, weight_matrix
from recsys.quality import ranking_metrics
from recsys.sequence_train import NeuralParams, neural_params, user_sequences
from recsys.spark_als import SparkOptions, spark_options
from recsys.split import Holdout, build_holdout, cutoff_for

log = logging.getLogger(__name__)

DEFAULT_CANDIDATES = ("popularity", "als", "knn_cosine", "knn_bm25", "knn_tfidf", "ease")
VALIDATIONS = ("time", "random")
NO_VALIDATION = "none"  # Selection.validation of a single candidate chosen without a carve
# the whole training part is 1 / (1 - validation_fraction) of the fit part (x1.25 at 0.2),
# plus scoring: the leaderboard's refits cost about this multiple of the validation fits
RESERVE = 1.5


class SelectionError(RecsysError):
    """Selection cannot run (unknown candidate or metric)."""


@dataclass(frozen=True)
class SelectionConfig:
    candidates: tuple[str, ...] = DEFAULT_CANDIDATES
    budget_s: float = 180.0
    k: int = 10
    metric: str = "ndcg@10"
    validation: str = "time"
    validation_fraction: float = 0.2
    max_users: int | None = 2000
    seed: int = 42
    threads: int = 0
    neighbours: int = 100
    ease_max_items: int = 20_000
    spark: SparkOptions | None = None  # ALS fitted by Spark MLlib (None: implicit)
    search: bool = True  # False: score the start points only (reuse the last run's best)
    # a personal model must beat popularity, and a search step the candidate's best point, by
    # this share on validation: a win inside the noise of a small validation set is no reason
    # to serve something less robust or to leave the start point
    min_lift: float = 0.01
    neural: NeuralParams | None = None  # the neural candidate's settings (None: defaults)

    def context(self) -> FitContext:
        return FitContext(seed=self.seed, threads=self.threads, neighbours=self.neighbours,
                          max_items=self.ease_max_items, spark=self.spark, neural=self.neural)


@dataclass
class Entry:
    """One candidate's row of the leaderboard."""

    name: str
    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, float] = field(default_factory=dict)
    holdout: dict[str, float] | None = None
    trials: int = 0
    fit_seconds: float = 0.0  # of the best point on the validation fit part
    skipped: str | None = None

    def score(self, metric: str) -> float:
        return float(self.validation.get(metric, -np.inf)) if not self.skipped else -np.inf


@dataclass
class Selection:
    leaderboard: list[Entry]
    winner: str
    reason: str
    metric: str
    validation: str
    n_validation_users: int
    seconds: float
    budget_s: float
    searched: bool

    def entry(self, name: str) -> Entry:
        return next(e for e in self.leaderboard if e.name == name)

    @property
    def winning(self) -> Entry:
        return self.entry(self.winner)

    def best_params(self) -> dict[str, dict[str, Any]]:
        return {e.name: dict(e.params) for e in self.leaderboard if not e.skipped}

    def as_manifest(self) -> dict[str, Any]:
        return {"winner": self.winner, "reason": self.reason, "metric": self.metric,
                "validation": self.validation, "validation_users": self.n_validation_users,
                "seconds": round(self.seconds, 3), "budget_s": self.budget_s,
                "searched": self.searched,
                "leaderboard": [asdict(e) for e in self.leaderboard]}


# --- validation ----------------------------------------------------------------------------
def holdout_from_weights(train: sp.csr_matrix, test_rows: np.ndarray, test_cols: np.ndarray,
                         cutoff_ms: int, max_users: int | None, seed: int) -> Holdout:
    """recsys.split.build_holdout on a summed-weight matrix: `seen_values` are weights, which
    each candidate turns into what it ranks from."""
    return build_holdout(test_rows, test_cols, train, cutoff_ms, max_users, seed)


def carve_validation(events: IndexedEvents, train_mask: np.ndarray, how: str,
                     fraction: float, max_users: int | None, seed: int
                     ) -> tuple[sp.csr_matrix, Holdout]:
    """(summed weights of the fit part, validation holdout), from the training events only."""
    mask = np.asarray(train_mask, dtype=bool)
    if how == "time":
        cutoff = cutoff_for(events.timestamps[mask], fraction)
        fit_mask = mask & (events.timestamps < cutoff)
        later = mask & ~fit_mask
        fit = weight_matrix(events, fit_mask)
        return fit, holdout_from_weights(fit, events.rows[later], events.cols[later], cutoff,
                                         max_users, seed)
    if how == "random":
        full = weight_matrix(events, mask)
        coo = full.tocoo()
        rng = np.random.default_rng(seed + 1)
        take = rng.random(coo.nnz) < fraction
        counts = np.diff(full.indptr)
        take &= counts[coo.row] >= 2
        # every user keeps at least one training item: a user whose draw took all is untaken
        kept = np.bincount(coo.row[~take], minlength=full.shape[0])
        take &= kept[coo.row] > 0
        fit = sp.csr_matrix((coo.data[~take], (coo.row[~take], coo.col[~take])),
                            shape=full.shape)
        fit.sort_indices()
        return fit, holdout_from_weights(fit, coo.row[take], coo.col[take], -1, max_users,
                                         seed)
    raise SelectionError(f"unknown validation {how!r}; known: {VALIDATIONS}")


def evaluate(model: Fitted, holdout: Holdout, k: int) -> dict[str, float]:
    if holdout.n_users == 0:
        return {}
    metrics = ranking_metrics(model.rank(holdout, k), holdout.relevant, k, holdout.n_items)
    bad = [name for name, value in metrics.items() if not np.isfinite(value)]
    if bad:
        raise SelectionError(f"{model.name}: non-finite metrics {bad}")
    return metrics


# --- search --------------------------------------------------------------------------------
def _neighbour_points(params: Mapping[str, Any], space: Mapping[str, Sequence[Any]]
                      ) -> list[dict[str, Any]]:
    """One step up and down each axis of the space from `params` (nearest grid value when the
    current value is off the grid)."""
    points = []
    for axis, values in space.items():
        values = list(values)
        current = params.get(axis, values[0])
        try:
            pos = values.index(current)
        except ValueError:
            pos = int(np.argmin([abs(float(v) - float(current)) for v in values]))
            if values[pos] != current:
                points.append({**params, axis: values[pos]})
        for step in (-1, 1):
            if 0 <= pos + step < len(values):
                points.append({**params, axis: values[pos + step]})
    return points


def _key(name: str, params: Mapping[str, Any]) -> tuple:
    return (name, tuple(sorted((k, str(v)) for k, v in params.items())))


def select(events: IndexedEvents, train_mask: np.ndarray, config: SelectionConfig,
           warm: Mapping[str, Mapping[str, Any]] | None = None) -> Selection:
    """Tune and choose on the training events in `train_mask` (see the module docstring)."""
    started = time.perf_counter()
    specs = [registry.get(name) for name in config.candidates]
    if "popularity" not in config.candidates:
        specs.insert(0, registry.get("popularity"))  # the floor is always on the board
    name, _, k_text = config.metric.partition("@")
    if not k_text.isdigit() or int(k_text) != config.k:
        raise SelectionError(f"metric {config.metric!r} must be at k={config.k}")
    ctx = config.context()
    personal = [spec for spec in specs if spec.kind != KIND_POPULARITY]
    if not config.search and len(personal) == 1:
        return _single(events, train_mask, config, personal[0], ctx, warm, started)
    if any(spec.kind == KIND_NEURAL for spec in specs):
        ctx = replace(ctx, sequences=training_sequences(events, train_mask))
    fit_part, holdout = carve_validation(events, train_mask, config.validation,
                                         config.validation_fraction, config.max_users,
                                         config.seed)
    board = {s.name: Entry(s.name, s.kind) for s in specs}
    n_users = int((np.diff(fit_part.indptr) > 0).sum())
    n_items = int((np.bincount(fit_part.indices, minlength=fit_part.shape[1]) > 0).sum())
    too_small = (f"{n_users} user(s) x {n_items} item(s) in the fit part: nothing personal "
                 "to learn" if n_users < 2 or n_items < 2 else None)
    deadline = started + config.budget_s
    ctx = replace(ctx, deadline=deadline)
    tried: set[tuple] = set()
    last_fit: dict[str, float] = {}

    def trial(spec: Any, params: dict[str, Any]) -> bool:
        """Fit and score one point; True when it became the candidate's best."""
        tried.add(_key(spec.name, params))
        entry = board[spec.name]
        t0 = time.perf_counter()
        try:
            model = spec.fit(fit_part, params, ctx)
            metrics = evaluate(model, holdout, config.k)
        except Exception as exc:  # noqa: BLE001 - one candidate's failure is recorded
            log.warning("candidate %s %s failed: %s", spec.name, params, exc)
            if not entry.validation:
                entry.skipped = f"failed: {exc}"
            return False
        last_fit[spec.name] = time.perf_counter() - t0
        entry.trials += 1
        value = metrics.get(config.metric, -np.inf)
        log.info("candidate %s %s: %s %.4f (%.2fs)", spec.name, params, config.metric, value,
                 last_fit[spec.name])
        # a search step must beat the candidate's current best by `min_lift`, as a personal
        # model must beat popularity: a gain inside the validation noise is no reason to
        # move away from the start point (the defaults or the last run's best)
        if not entry.validation or value > entry.score(config.metric) * (1.0 + config.min_lift):
            entry.params, entry.validation = dict(params), metrics
            entry.fit_seconds, entry.skipped = last_fit[spec.name], None
            return True
        return False

    # start points: every candidate, cheapest kinds first (popularity, item-item, factors,
    # then the neural tower, whose training stops at the deadline: it gets what is left)
    cost = {KIND_POPULARITY: 0, KIND_ITEM_ITEM: 1, KIND_NEURAL: 3}
    for spec in sorted(specs, key=lambda sp_: cost.get(sp_.kind, 2)):
        reason = spec.skip(fit_part.shape, ctx) if spec.skip else None
        if holdout.n_users == 0:
            reason = "no validation users"
        elif too_small and spec.kind != KIND_POPULARITY:
            reason = too_small
        if reason:
            board[spec.name].skipped = reason
            continue
        start = {**spec.defaults, **dict((warm or {}).get(spec.name, {}))}
        trial(spec, start)

    searched = config.search and holdout.n_users > 0
    while searched:
        improved = False
        order = sorted((s for s in specs if s.space and not board[s.name].skipped),
                       key=lambda s: -board[s.name].score(config.metric))
        for spec in order:
            for point in _neighbour_points(board[spec.name].params, spec.space):
                if _key(spec.name, point) in tried:
                    continue
                reserve = RESERVE * sum(e.fit_seconds for e in board.values() if not e.skipped)
                left = deadline - reserve - time.perf_counter()
                if last_fit.get(spec.name, 0.0) * 1.5 > left:
                    continue  # would overrun: try cheaper candidates' points
                improved |= trial(spec, point)
        if not improved or time.perf_counter() > deadline:
            break

    metric = config.metric
    pop = board["popularity"]
    best = max((e for e in board.values() if e.kind != KIND_POPULARITY and not e.skipped),
               key=lambda e: e.score(metric), default=None)
    if holdout.n_users == 0:
        winner, reason = "popularity", "no validation users: popularity-only version"
    elif too_small:
        winner, reason = "popularity", f"{too_small}: popularity-only version"
    elif best is None:
        winner, reason = "popularity", "no personalised candidate could be fitted"
    elif best.score(metric) > pop.score(metric) * (1.0 + config.min_lift):
        winner = best.name
        reason = f"{best.name} {metric} {best.score(metric):.4f} > popularity " \
                 f"{pop.score(metric):.4f} on validation"
    else:
        winner = "popularity"
        reason = f"no candidate beats popularity on validation by {config.min_lift:.0%} " \
                 f"(best {best.name} {best.score(metric):.4f}, popularity " \
                 f"{pop.score(metric):.4f})"
    seconds = time.perf_counter() - started
    log.info("selection: %s (%s) in %.1fs of %.0fs", winner, reason, seconds, config.budget_s)
    return Selection(list(board.values()), winner, reason, metric, config.validation,
                     holdout.n_users, seconds, config.budget_s, searched)


def _single(events: IndexedEvents, train_mask: np.ndarray, config: SelectionConfig,
            spec: Any, ctx: FitContext, warm: Mapping[str, Mapping[str, Any]] | None,
            started: float) -> Selection:
    """One personal candidate and no search: nothing to choose on validation, so no carve
    and no fit here. The candidate at its start point wins unless it cannot run; the caller
    checks it against popularity on its holdout (the trainer's `_confirm_on_holdout`), which
    a selection's winner passes too. Saves a fit on the validation part each run (about
    0.6 x a fit at the settings' point)."""
    mask = np.asarray(train_mask, dtype=bool)
    weighted = mask & (events.weights != 0)
    n_users = int(np.count_nonzero(np.bincount(events.rows[weighted],
                                               minlength=events.shape[0])))
    n_items = int(np.count_nonzero(np.bincount(events.cols[weighted],
                                               minlength=events.shape[1])))
    pop = Entry("popularity", KIND_POPULARITY, dict(registry.get("popularity").defaults))
    entry = Entry(spec.name, spec.kind, {**spec.defaults,
                                         **dict((warm or {}).get(spec.name, {}))})
    if n_users < 2 or n_items < 2:
        entry.skipped = (f"{n_users} user(s) x {n_items} item(s) in the training part: "
                         "nothing personal to learn")
    elif spec.skip:
        if spec.kind == KIND_NEURAL:
            ctx = replace(ctx, sequences=training_sequences(events, mask))
        entry.skipped = spec.skip((events.shape[0], events.shape[1]), ctx)
    if entry.skipped:
        winner, reason = "popularity", f"{spec.name} skipped: {entry.skipped}"
    else:
        winner = spec.name
        reason = (f"{spec.name} is the only candidate and no search runs: no validation "
                  "carve; the holdout checks it against popularity")
    log.info("selection: %s (%s)", winner, reason)
    return Selection([pop, entry], winner, reason, config.metric, NO_VALIDATION, 0,
                     time.perf_counter() - started, config.budget_s, False)


def training_sequences(events: IndexedEvents, mask: np.ndarray) -> list[list[int]]:
    """Per user row, the item columns of the events under `mask` in the stream's order
    (FitContext.sequences, for sequence candidates)."""
    mask = np.asarray(mask, dtype=bool)
    return user_sequences(events.rows[mask], events.cols[mask], events.timestamps[mask],
                          events.item_ids, events.shape[0])


def fit_on(name: str, train: sp.csr_matrix, params: Mapping[str, Any],
           config: SelectionConfig, sequences: Sequence[Sequence[int]] | None = None
           ) -> Fitted:
    """`sequences`: the training events' order, for sequence candidates (neural)."""
    return registry.get(name).fit(train, params, replace(config.context(),
                                                         sequences=sequences))


# --- when to tune again ----------------------------------------------------------------------
def retune_reason(previous: Mapping[str, Any] | None, n_events: int, growth: float,
                  interval_days: float, now: datetime | None = None) -> str | None:
    """Why the search must run again (None: reuse the last run's best points).

    `previous` is the last version's `tuning` record: {n_events, tuned_at (ISO), params}."""
    if not previous or not previous.get("params"):
        return "no previous tuning"
    tuned_events = int(previous.get("n_events") or 0)
    if tuned_events <= 0 or n_events >= growth * tuned_events:
        return f"data grew from {tuned_events} to {n_events} events (x{growth:g} triggers)"
    try:
        tuned_at = datetime.fromisoformat(str(previous["tuned_at"]))
    except (KeyError, ValueError):
        return "previous tuning has no valid time"
    age_days = ((now or datetime.now(UTC)) - tuned_at).total_seconds() / 86_400
    if age_days >= interval_days:
        return f"last tuned {age_days:.1f} days ago (every {interval_days:g})"
    return None


def config_from_settings(settings: Any, **overrides: Any) -> SelectionConfig:
    """The trainer's selection settings (recsys.settings.Settings), with overrides."""
    k = int(settings.trainer_gate_metric.partition("@")[2])
    values: dict[str, Any] = dict(
        candidates=tuple(settings.trainer_candidates), budget_s=settings.trainer_tune_budget_s,
        k=k, metric=settings.trainer_gate_metric,
        validation_fraction=settings.trainer_validation_fraction,
        max_users=settings.trainer_eval_max_users, seed=settings.random_seed,
        threads=settings.trainer_fit_threads, neighbours=settings.trainer_neighbours,
        ease_max_items=settings.trainer_ease_max_items, spark=spark_options(settings),
        neural=neural_params(settings))
    values.update(overrides)
    return SelectionConfig(**values)


__all__ = ["DEFAULT_CANDIDATES", "NO_VALIDATION", "Entry", "Selection", "SelectionConfig",
           "SelectionError", "carve_validation", "config_from_settings", "evaluate", "fit_on",
           "retune_reason", "select", "training_sequences"]
