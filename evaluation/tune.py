"""`recsys tune`: hyper-parameter search on a validation split, never on the test split.

With `--candidates`, `recsys tune` is a thin caller of the trainer's own search
(recsys.selection.select: every candidate tuned within a time budget on validation carved
from the training part, the winner chosen as the trainer chooses): `run_tune_candidates`.
Without it, the ALS grid study below (folds, iteration axis, charts).

    outer  = make_split(protocol, events, ...)              # train | test, as `evaluate` does
    result = tune(events, outer.train_mask, protocol, ...)  # sees the training events only
    final  = test_scores(events, outer, result.best, ...)   # the test split, used once

How the search works:

1. The training part of the outer split is split again with the same protocol into a fit
   part and a validation part, `folds` times (time: rolling origin, each fold holding out the
   last `holdout_fraction` of the previous fold's fit part; stratified: per user 75/25 with
   seeds seed + 1, seed + 2, ...). A point's score is its mean over the folds: on ML-100K's
   time split one fold has only ~100 validation users, too few to choose by. The test events
   are never read: `tune` receives a mask of the training events and everything it builds is
   restricted to it (`TuneResult` keeps the positions it used, and tests assert they are
   disjoint from the test positions and that scrambling the test events changes nothing).
2. Trials draw (factors, regularization, alpha) from the grid (all of it with
   `search="grid"`, `n_trials` distinct points at random otherwise). Each trial fits ALS once
   per iteration count in the grid, warm-starting from the previous count (trainer.fit_als
   with `init`), so the iteration axis costs one fit of the largest count.
3. `refine` then walks the grid from the best point: one step up and down in each of
   factors, regularization and alpha, keeping any improvement, until none improves.
4. The best trial by the mean validation metric (default ndcg@10) is the answer.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from evaluation import charts
from evaluation.evaluate import score
from evaluation.protocols import Split, make_split, with_alpha
from recsys.als import AlsParams, Factors, als_params, fit_als
from recsys.errors import RecsysError
from recsys.holdout_eval import fold_in_users
from recsys.matrix import IndexedEvents
from recsys.quality import HEADLINE_METRICS, METRIC_NAMES
from recsys.topk import rank_by_factors

log = logging.getLogger(__name__)

# Wide on the axes that matter most on small dense data (regularization, alpha: implicit's
# default-like tiny regularization lands far below popularity on ML-100K).
DEFAULT_SPACE: dict[str, list[float]] = {
    "factors": [16, 32, 64, 128, 200],
    "regularization": [0.01, 0.1, 1.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0],
    "alpha": [0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 40.0, 80.0],
    "iterations": [5, 10, 15, 25],
}
SEARCH_AXES = ("factors", "regularization", "alpha")
# Time protocol: validation users per fold, a seeded sample (the exact fold-in of every test
# user at every checkpoint dominates the cost on large logs; 3,000 users pin NDCG to ~0.01).
MAX_VALIDATION_USERS = 3_000
FOLD_NOTE = {
    "stratified": " (seeds seed + 1, seed + 2, ...: a new shuffle per fold)",
    "time": " (rolling origin: each fold holds out the last share of the previous fold's "
            "fit part)",
}


class TuneError(RecsysError):
    """The search cannot run (empty space, unknown metric, no validation users)."""


@dataclass(frozen=True)
class Trial:
    factors: int
    regularization: float
    alpha: float
    iterations: int
    metrics: dict[str, float]
    fit_seconds: float

    def params(self, seed: int = 42) -> AlsParams:
        return AlsParams(factors=self.factors, regularization=self.regularization,
                         iterations=self.iterations, alpha=self.alpha, seed=seed)

    def hyper(self) -> dict[str, Any]:
        return {"factors": self.factors, "regularization": self.regularization,
                "alpha": self.alpha, "iterations": self.iterations}


@dataclass
class TuneResult:
    protocol: str
    metric: str
    k: int
    description: str
    trials: list[Trial]
    fit_positions: np.ndarray         # event positions the fits used
    validation_positions: np.ndarray  # event positions the validation metric used
    n_validation_users: int        # per fold, mean
    folds: int = 1
    seconds: float = 0.0
    test: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def best(self) -> Trial:
        return max(self.trials, key=lambda t: t.metrics[self.metric])

    def to_json(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol, "metric": self.metric, "k": self.k,
            "validation": self.description, "n_fit_events": len(self.fit_positions),
            "n_validation_events": len(self.validation_positions),
            "n_validation_users": self.n_validation_users, "folds": self.folds,
            "seconds": self.seconds,
            "best": {**self.best.hyper(), "validation": self.best.metrics},
            "test": self.test,
            "trials": [{**t.hyper(), **t.metrics, "fit_seconds": t.fit_seconds}
                       for t in self.trials],
        }


def _check_space(space: Mapping[str, Sequence[float]]) -> dict[str, list[float]]:
    missing = [a for a in (*SEARCH_AXES, "iterations") if not space.get(a)]
    if missing:
        raise TuneError(f"search space lacks values for {missing}")
    out = {a: sorted({float(v) for v in space[a]}) for a in (*SEARCH_AXES, "iterations")}
    for axis in ("factors", "iterations"):
        if any(v < 1 or v != int(v) for v in out[axis]):
            raise TuneError(f"{axis} must be positive integers")
        out[axis] = [int(v) for v in out[axis]]
    if any(v < 0 for v in out["regularization"]) or any(v <= 0 for v in out["alpha"]):
        raise TuneError("regularization must be >= 0 and alpha > 0")
    return out


def _evaluate(split: Split, factors: Factors, regularization: float, k: int) -> dict[str, float]:
    users = fold_in_users(split.holdout, factors.item_factors, regularization)
    recs = rank_by_factors(users, factors.item_factors, k, exclude=split.holdout.seen,
                           allowed=split.holdout.allowed)
    return score(recs, split, k)


def run_trial(split: Split, point: tuple[int, float, float], iterations: Sequence[int], k: int,
              seed: int = 42, threads: int = 0) -> list[Trial]:
    """One (factors, regularization, alpha) point, evaluated after each iteration count."""
    n_factors, reg, alpha = point
    trials: list[Trial] = []
    current: Factors | None = None
    done = 0
    spent = 0.0
    for total in sorted(iterations):
        params = AlsParams(factors=n_factors, regularization=reg, iterations=total,
                           alpha=alpha, seed=seed, threads=threads)
        current = fit_als(split.conf_train, params, init=current, iterations=total - done)
        spent += current.seconds
        done = total
        trials.append(Trial(n_factors, reg, alpha, total,
                            _evaluate(split, current, reg, k), spent))
    return trials


def _grid_points(space: Mapping[str, list[float]]) -> list[tuple[int, float, float]]:
    return [(int(f), float(r), float(a)) for f, r, a in itertools.product(
        space["factors"], space["regularization"], space["alpha"])]


def _neighbours(point: tuple[int, float, float],
                space: Mapping[str, list[float]]) -> list[tuple[int, float, float]]:
    out = []
    for axis_pos, axis in enumerate(SEARCH_AXES):
        values = space[axis]
        pos = values.index(point[axis_pos])
        for step in (-1, 1):
            if 0 <= pos + step < len(values):
                moved = list(point)
                moved[axis_pos] = values[pos + step]
                out.append((int(moved[0]), float(moved[1]), float(moved[2])))
    return out


def validation_splits(events: IndexedEvents, train_mask: np.ndarray, protocol: str, alpha: float,
                      folds: int, holdout_fraction: float, seed: int,
                      max_users: int | None = None) -> list[Split]:
    """`folds` validation splits carved from the training events only.

    stratified: the same per-user random split with seeds seed+1, seed+2, ... (seed + 1: the
    inner shuffle must not repeat the outer one). time: rolling origin: fold 1 holds out the
    last `holdout_fraction` of the training events, fold 2 the same share of what fold 1
    fitted on, and so on back in time.
    """
    splits: list[Split] = []
    subset = np.asarray(train_mask, dtype=bool)
    for fold in range(folds):
        if protocol == "stratified":
            split = make_split(protocol, events, alpha, seed=seed + 1 + fold, mask=subset)
        else:
            split = make_split(protocol, events, alpha, holdout_fraction=holdout_fraction,
                               seed=seed, mask=subset, max_users=max_users)
            subset = split.train_mask
        if split.holdout.n_users == 0:
            if not splits:
                raise TuneError("the validation split has no users; the training part is "
                                "too small")
            log.warning("validation fold %d has no users; using %d folds", fold + 1,
                        len(splits))
            break
        splits.append(split)
    return splits


def _mean_trials(per_fold: list[list[Trial]]) -> list[Trial]:
    """Average each iteration count's metrics over the folds; fit time is the total."""
    out = []
    for same in zip(*per_fold, strict=True):
        metrics = {m: float(np.mean([t.metrics[m] for t in same])) for m in same[0].metrics}
        out.append(replace(same[0], metrics=metrics,
                           fit_seconds=float(sum(t.fit_seconds for t in same))))
    return out


def tune(events: IndexedEvents, train_mask: np.ndarray, protocol: str, *,
         space: Mapping[str, Sequence[float]] | None = None, search: str = "random",
         n_trials: int = 24, refine: bool = True, folds: int = 3, k: int = 10,
         metric: str | None = None, holdout_fraction: float = 0.2, seed: int = 42,
         threads: int = 0, max_users: int | None = MAX_VALIDATION_USERS,
         progress: Callable[[int, int, Trial], None] | None = None) -> TuneResult:
    """Search on validation splits carved from the events in `train_mask` only; a point's
    score is its mean over the folds (one small validation set is too noisy to choose by)."""
    started = time.perf_counter()
    grid = _check_space(space or DEFAULT_SPACE)
    metric = metric or f"ndcg@{k}"
    known = {f"{name}@{k}" for name in METRIC_NAMES} | {f"map_ms@{k}"}
    if metric not in known:
        raise TuneError(f"unknown metric {metric!r}; known: {sorted(known)}")
    if folds < 1:
        raise TuneError("folds must be >= 1")
    bases = validation_splits(events, train_mask, protocol, grid["alpha"][0], folds,
                              holdout_fraction, seed, max_users)
    points = _grid_points(grid)
    if search == "random":
        rng = np.random.default_rng(seed)
        chosen = rng.choice(len(points), size=min(n_trials, len(points)), replace=False)
        points = [points[i] for i in chosen]
    elif search != "grid":
        raise TuneError("search must be 'random' or 'grid'")

    by_alpha: dict[float, list[Split]] = {}
    done: dict[tuple[int, float, float], list[Trial]] = {}
    trials: list[Trial] = []

    def evaluate(point: tuple[int, float, float], total: int) -> None:
        if point in done:
            return
        splits = by_alpha.get(point[2])
        if splits is None:
            splits = by_alpha[point[2]] = [with_alpha(b, events, point[2]) for b in bases]
        done[point] = _mean_trials([run_trial(split, point, grid["iterations"], k, seed,
                                              threads) for split in splits])
        trials.extend(done[point])
        best_here = max(done[point], key=lambda t: t.metrics[metric])
        log.info("trial %d/%s factors=%d reg=%g alpha=%g: best %s %.4f at %d iterations",
                 len(done), total, point[0], point[1], point[2], metric,
                 best_here.metrics[metric], best_here.iterations)
        if progress:
            progress(len(done), total, best_here)

    for point in points:
        evaluate(point, len(points))
    if refine and search == "random":
        while True:
            best = max(trials, key=lambda t: t.metrics[metric])
            todo = [p for p in _neighbours((best.factors, best.regularization, best.alpha), grid)
                    if p not in done]
            for point in todo:
                evaluate(point, len(done) + len(todo))
            if max(trials, key=lambda t: t.metrics[metric]) is best:
                break
    fit = np.zeros(len(events), dtype=bool)
    validation = np.zeros(len(events), dtype=bool)
    for b in bases:
        fit |= b.train_mask
        validation |= b.test_mask
    return TuneResult(
        protocol=protocol, metric=metric, k=k, description=bases[0].description,
        trials=trials, fit_positions=np.flatnonzero(fit),
        validation_positions=np.flatnonzero(validation),
        n_validation_users=int(np.mean([b.holdout.n_users for b in bases])),
        folds=len(bases), seconds=time.perf_counter() - started)


def test_scores(events: IndexedEvents, outer: Split, params: Mapping[str, AlsParams],
                k: int) -> dict[str, dict[str, float]]:
    """Each named parameter set fitted on the whole training part and scored once on the
    test split. Selection is over by then: these numbers are reported, never compared to
    pick parameters."""
    out = {}
    for name, p in params.items():
        split = with_alpha(outer, events, p.alpha)
        factors = fit_als(split.conf_train, p)
        out[name] = {**_evaluate(split, factors, p.regularization, k),
                     "fit_seconds": factors.seconds, **{f"param_{a}": getattr(p, a) for a in
                                                        ("factors", "regularization", "alpha",
                                                         "iterations")}}
    return out


# --- report -------------------------------------------------------------------------------
def best_by_value(trials: Sequence[Trial], axis: str, metric: str) -> tuple[list[float],
                                                                           list[float]]:
    """For each value of one hyper-parameter, the best metric over the other axes."""
    best: dict[float, float] = {}
    for t in trials:
        value = float(getattr(t, axis))
        best[value] = max(best.get(value, -np.inf), t.metrics[metric])
    values = sorted(best)
    return values, [best[v] for v in values]


def write_tune_report(result: TuneResult, out_dir: Path, source: str) -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    m = result.metric
    paths: dict[str, Path] = {}
    for axis in (*SEARCH_AXES, "iterations"):
        xs, ys = best_by_value(result.trials, axis, m)
        name = f"tune_{result.protocol}_{axis}.png"
        paths[name] = charts.sweep(
            xs, ys, out_dir / name,
            f"{source}, {result.protocol} validation: best {m} of the points tried, by {axis}",
            axis, m,
            log_x=axis in ("regularization", "alpha"))
    data = {"source": source, **result.to_json()}
    data_file = out_dir / f"tune_{result.protocol}.json"
    data_file.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    best_file = out_dir / "best_params.json"
    previous: dict[str, Any] = {}
    if best_file.exists():  # one file holds the best of each protocol tuned into this dir
        try:
            previous = json.loads(best_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            previous = {}
    previous[result.protocol] = result.best.hyper()
    best_file.write_text(json.dumps(previous, indent=2) + "\n", encoding="utf-8")
    md = out_dir / f"tune_{result.protocol}.md"
    md.write_text(render_tune(result, source), encoding="utf-8")
    return {**paths, data_file.name: data_file, "best_params.json": best_file, md.name: md}


def render_tune(result: TuneResult, source: str) -> str:
    m, k = result.metric, result.k
    best = result.best
    top = sorted(result.trials, key=lambda t: -t.metrics[m])[:10]
    lines = [
        f"# ALS tuning: `{source}`, {result.protocol} protocol", "",
        f"Validation splits, carved from the training part only (the test split is never "
        f"read during the search): {result.folds} fold(s) of {result.description}"
        f"{FOLD_NOTE[result.protocol] if result.folds > 1 else ''}. Each point's score is its "
        f"mean over the folds. {len(result.fit_positions):,} distinct fit events, "
        f"{len(result.validation_positions):,} distinct validation events, "
        f"~{result.n_validation_users:,} validation users per fold.", "",
        f"{len({(t.factors, t.regularization, t.alpha) for t in result.trials})} points "
        f"(factors, regularization, alpha) x {len({t.iterations for t in result.trials})} "
        f"iteration counts = {len(result.trials)} evaluations in {result.seconds:.0f} s; "
        f"selection metric {m}.", "",
        f"**Best**: factors {best.factors}, regularization {best.regularization:g}, alpha "
        f"{best.alpha:g}, iterations {best.iterations}: validation {m} {best.metrics[m]:.4f}.",
        "", "| factors | regularization | alpha | iterations | " + m + f" | precision@{k} | "
        f"recall@{k} | map@{k} |", "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in top:
        lines.append(f"| {t.factors} | {t.regularization:g} | {t.alpha:g} | {t.iterations} | "
                     f"{t.metrics[m]:.4f} | {t.metrics[f'precision@{k}']:.4f} | "
                     f"{t.metrics[f'recall@{k}']:.4f} | {t.metrics[f'map@{k}']:.4f} |")
    if result.test:
        keys = [f"{x}@{k}" for x in HEADLINE_METRICS]
        lines += ["", "Test split, scored once after the search (not used to choose):", "",
                  "| parameters | factors | regularization | alpha | iterations | "
                  + " | ".join(keys) + " |", "|---|---:|---:|---:|---:|" + "---:|" * len(keys)]
        for name, v in result.test.items():
            lines.append(f"| {name} | {v['param_factors']} | {v['param_regularization']:g} | "
                         f"{v['param_alpha']:g} | {v['param_iterations']} | "
                         + " | ".join(f"{v[x]:.4f}" for x in keys) + " |")
    lines += [""] + [f"![best {m} by {a}](tune_{result.protocol}_{a}.png)"
                     for a in (*SEARCH_AXES, "iterations")]
    return "\n".join(lines) + "\n"


def run_tune(frame: Any, settings: Any, out_dir: Path, protocol: str, *, source: str,
             k: int = 10, search: str = "random", n_trials: int = 24, refine: bool = True,
             folds: int = 3, space: Mapping[str, Sequence[float]] | None = None,
             metric: str | None = None,
             progress: Callable[[int, int, Trial], None] | None = None) -> TuneResult:
    """The CLI's whole run: outer split, search on its training part, one test scoring of
    the best and of the settings' parameters, report files."""
    from recsys.matrix import index_events

    events = index_events(frame, settings.event_weights,
                          negative_rating_max=settings.negative_rating_max)
    outer = make_split(protocol, events, settings.alpha,
                       holdout_fraction=settings.trainer_holdout_fraction,
                       seed=settings.random_seed)
    result = tune(events, outer.train_mask, protocol, space=space, search=search,
                  n_trials=n_trials, refine=refine, folds=folds, k=k, metric=metric,
                  holdout_fraction=settings.trainer_holdout_fraction, seed=settings.random_seed,
                  progress=progress)
    result.test = test_scores(events, outer, {
        "best (tuned)": result.best.params(settings.random_seed),
        "settings": als_params(settings)}, k)
    write_tune_report(result, out_dir, source)
    return result


def run_tune_candidates(frame: Any, settings: Any, out_dir: Path, protocol: str, *,
                        source: str, k: int = 10, candidates: Sequence[str] | None = None,
                        budget_s: float | None = None) -> dict[str, Any]:
    """The trainer's search (recsys.selection) on the outer split's training part, every
    candidate's best point scored once on the test split for the report."""
    from evaluation.evaluate import score, selection_config
    from recsys.candidates import KIND_NEURAL
    from recsys.matrix import index_events, weight_matrix
    from recsys.selection import fit_on, select, training_sequences

    events = index_events(frame, settings.event_weights)
    outer = make_split(protocol, events, settings.alpha,
                       holdout_fraction=settings.trainer_holdout_fraction,
                       seed=settings.random_seed)
    config = selection_config(settings, protocol, k)
    overrides: dict[str, Any] = {}
    if candidates:
        overrides["candidates"] = tuple(candidates)
    if budget_s is not None:
        overrides["budget_s"] = float(budget_s)
    if overrides:
        config = replace(config, **overrides)
    selection = select(events, outer.train_mask, config)
    train = weight_matrix(events, outer.train_mask)
    sub = train[outer.holdout.users]
    holdout = replace(outer.holdout, seen_values=np.asarray(sub.data))
    metric = config.metric
    sequences = (training_sequences(events, outer.train_mask)
                 if any(e.kind == KIND_NEURAL and not e.skipped for e in selection.leaderboard)
                 else None)
    rows = []
    for entry in selection.leaderboard:
        test = None
        if not entry.skipped:
            model = fit_on(entry.name, train, entry.params, config, sequences)
            test = score(model.rank(holdout, k), replace(outer, holdout=holdout), k)
        rows.append({**{key: getattr(entry, key) for key in
                        ("name", "kind", "params", "validation", "trials", "skipped")},
                     "test": test})
    lines = [f"# Candidates on `{source}`, {protocol} protocol", "",
             f"Search: recsys.selection (the trainer's), {selection.seconds:.1f}s of a "
             f"{config.budget_s:g}s budget, validation {config.validation} carved from the "
             f"training part ({selection.n_validation_users} users). Winner: "
             f"**{selection.winner}** ({selection.reason}).", "",
             f"| candidate | kind | trials | validation {metric} | test {metric} | settings |",
             "|---|---|---:|---:|---:|---|"]
    for row in rows:
        val = row["validation"].get(metric)
        test = (row["test"] or {}).get(metric)
        lines.append(f"| {row['name']} | {row['kind']} | {row['trials']} | "
                     f"{'-' if val is None else f'{val:.4f}'} | "
                     f"{'-' if test is None else f'{test:.4f}'} | "
                     f"{row['skipped'] or row['params']} |")
    text = "\n".join(lines) + "\n"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"candidates_{protocol}.md").write_text(text, encoding="utf-8")
    report = {"source": source, "protocol": protocol, "winner": selection.winner,
              "reason": selection.reason, "seconds": selection.seconds, "candidates": rows}
    (out_dir / f"candidates_{protocol}.json").write_text(json.dumps(report, indent=2,
                                                                    default=float))
    return {**report, "text": text}
