"""`recsys evaluate`: offline comparison of the recommenders on one source, one or two protocols.

    report = run_evaluation(frame, settings, out_dir, k=10, protocols=("time",))

Models, each ranked for the same test users with their training items excluded and only
items that occur in training allowed:

* **popularity**: distinct training users per item (recsys.baselines), the floor;
* **selected**: what `recsys train` would serve: every candidate (recsys.candidates) tuned
  and chosen by recsys.selection with the trainer's default settings on validation carved from
  this split's training part (time: its newest events; stratified: per-user random), the
  winner refitted on the whole training part;
* **item-kNN**: implicit's `CosineRecommender` (cosine item-item similarity on the training
  confidences, `KNN_NEIGHBOURS` neighbours); score(u, i) = sum_j c_uj sim(j, i);
* **ALS**: implicit ALS fitted by the trainer's own `recsys.als.fit_als` on the trainer's
  confidence matrix (c = 1 + alpha * weighted count, recsys.confidence), with the settings'
  hyper-parameters; each test user's vector is folded in from their training items
  (recsys.holdout_eval.fold_in_users, the stream's maths). With `params` (from `recsys tune`)
  a second row "ALS (tuned)" uses those.

Metrics at k: recsys.quality (precision, recall, F1, MAP, NDCG, hit rate, coverage), plus
`map_ms@k`, MAP as Microsoft Recommenders computes it (AP divided by all of the user's
held-out items, not min(k, n)), so the stratified table compares with their published rows.
`ild@k` is the lists' intra-list diversity (recsys.quality.intra_list_diversity: 1 - the
co-occurrence cosine of the training data, averaged over each list's pairs), next to NDCG in
every row: a re-rank for diversity trades one for the other.

For sources with explicit ratings, RMSE of rating predictors (evaluation.rating) on the held
-out ratings of users and items that occur in training.

`references` (`--reference cornac-bpr`) adds rows from external libraries fitted on the same
split in the same run (evaluation.references), and every row's NDCG as a ratio to theirs.

Writes metrics.json, report.md and charts into `out_dir`; `--replay` adds the streaming
replay (evaluation.replay).
"""

from __future__ import annotations

import json
import logging
import platform
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from evaluation import DEFAULT_MODELS, MODELS, charts
from evaluation.content_rows import cold_item_rows, hybrid_rows
from evaluation.protocols import PROTOCOLS, Split, make_split
from evaluation.rating import rating_models, rmse
from recsys.als import PARAM_NAMES, AlsParams, Factors, als_params, fit_als
from recsys.baselines import PopularityRecommender
from recsys.candidates import KIND_NEURAL
from recsys.errors import RecsysError
from recsys.events import EventType
from recsys.holdout_eval import fold_in_users
from recsys.item_attributes import ItemAttributes
from recsys.matrix import IndexedEvents, index_events, weight_matrix
from recsys.quality import (
    HEADLINE_METRICS,
    METRIC_NAMES,
    UserItems,
    hits,
    intra_list_diversity,
    ranking_metrics,
)
from recsys.selection import (
    Selection,
    SelectionConfig,
    config_from_settings,
    fit_on,
    select,
    training_sequences,
)
from recsys.sequence_model import tower_queries
from recsys.sequence_train import NeuralParams, fit_neural_on, import_torch, neural_params
from recsys.settings import Settings
from recsys.topk import rank, rank_by_factors

log = logging.getLogger(__name__)

KNN_NEIGHBOURS = 100

# Microsoft Recommenders' ML-100K benchmark (stratified 75/25, seed 42, k = 10): the rows
# ARCHITECTURE.md quotes. Their MAP is our map_ms.
REFERENCE_ML100K = {
    "BiVAE (MS Recommenders)": {"ndcg@10": 0.475, "precision@10": 0.412, "recall@10": 0.219,
                                "map_ms@10": 0.146},
    "BPR (MS Recommenders)": {"ndcg@10": 0.442},
    "SAR (MS Recommenders)": {"ndcg@10": 0.382},
}


class EvaluationError(RecsysError):
    """The source cannot be evaluated (too few events, no test users)."""


# --- hyper-parameters ---------------------------------------------------------------------
def load_params_file(path: Path) -> dict[str, dict[str, Any]]:
    """Tuned parameters per protocol from a `recsys tune` best_params.json (or a flat
    {factors, regularization, alpha, iterations} object applied to every protocol)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise EvaluationError(f"cannot read parameters from {path}: {exc}") from None
    if not isinstance(data, dict):
        raise EvaluationError(f"{path}: expected a JSON object")
    if set(data) <= set(PARAM_NAMES):
        return {p: dict(data) for p in PROTOCOLS}
    return {p: dict(v) for p, v in data.items() if p in PROTOCOLS and isinstance(v, dict)}


# --- rankers: each returns (n_test_users, k) item columns, best first -------------------
def _seen_matrix(split: Split) -> sp.csr_matrix:
    h = split.holdout
    return sp.csr_matrix((h.seen_values.astype(np.float32), h.seen.indices, h.seen.indptr),
                         shape=(h.n_users, split.conf_train.shape[1]))


def rank_popularity(split: Split, events: IndexedEvents, k: int) -> np.ndarray:
    h = split.holdout
    model = PopularityRecommender(split.conf_train.shape[1]).fit(
        events.rows[split.train_mask], events.cols[split.train_mask],
        events.weights[split.train_mask])
    return model.recommend(h.n_users, k, exclude=h.exclude, allowed=h.allowed)


def rank_item_knn(split: Split, k: int, neighbours: int = KNN_NEIGHBOURS) -> np.ndarray:
    from implicit.nearest_neighbours import CosineRecommender

    model = CosineRecommender(K=neighbours, num_threads=1)
    with warnings.catch_warnings():
        # implicit transposes our CSR internally and then warns that it got a COO matrix
        warnings.filterwarnings("ignore", message="Method expects CSR input")
        model.fit(split.conf_train, show_progress=False)
    similarity = sp.csr_matrix(model.similarity)
    seen = _seen_matrix(split)
    h = split.holdout
    return rank(lambda a, b: (seen[a:b] @ similarity).toarray(), h.n_users, seen.shape[1], k,
                exclude=h.exclude, allowed=h.allowed)


def rank_history(split: Split, events: IndexedEvents, k: int) -> np.ndarray:
    """Buy again: the user's own training items by confidence (c >= 1), then the rest by
    popularity (scaled below 1, so it only orders what the history leaves open)."""
    h = split.holdout
    popularity = PopularityRecommender(split.conf_train.shape[1]).fit(
        events.rows[split.train_mask], events.cols[split.train_mask],
        events.weights[split.train_mask]).scores
    tail = (popularity / (popularity.max() + 1.0) if popularity.size and popularity.max() > 0
            else np.zeros_like(popularity)).astype(np.float32)
    seen = _seen_matrix(split)
    return rank(lambda a, b: seen[a:b].toarray() + tail, h.n_users, seen.shape[1], k,
                exclude=None, allowed=h.allowed)


def rank_als(split: Split, events: IndexedEvents, params: AlsParams, k: int,
             rescale: bool = True) -> tuple[np.ndarray, Factors]:
    """ALS top-k and the fitted factors. `rescale` rebuilds the confidences when
    `params.alpha` differs from the alpha the split was built with."""
    from evaluation.protocols import with_alpha

    split = with_alpha(split, events, params.alpha) if rescale else split
    factors = fit_als(split.conf_train, params)
    users = fold_in_users(split.holdout, factors.item_factors, params.regularization)
    recs = rank_by_factors(users, factors.item_factors, k, exclude=split.holdout.exclude,
                           allowed=split.holdout.allowed)
    return recs, factors


def rank_neural(split: Split, events: IndexedEvents, params: NeuralParams, k: int
                ) -> tuple[np.ndarray, float]:
    """Neural user tower top-k and the training time: trained on the training events'
    sequences (recsys.sequence_train), each test user's vector computed by the tower from
    their training sequence (recsys.sequence_model, the stream's maths)."""
    model, sequences = fit_neural_on(events, split.train_mask, params)
    h = split.holdout
    queries = tower_queries(model.tower(), h.users, sequences)
    recs = rank_by_factors(queries, model.item_factors, k, exclude=h.exclude, allowed=h.allowed)
    return recs, model.seconds


# --- metrics ------------------------------------------------------------------------------
def map_ms_at_k(recommended: np.ndarray, relevant: UserItems, k: int) -> float:
    """MAP as Microsoft Recommenders' benchmark computes it: AP divided by n_u (all held-out
    items of the user), not by min(k, n_u)."""
    hit = hits(np.asarray(recommended)[:, :k], relevant).astype(np.float64)
    if hit.size == 0:
        return 0.0
    precision = np.cumsum(hit, axis=1) / np.arange(1, hit.shape[1] + 1)
    ap = (precision * hit).sum(axis=1) / np.maximum(relevant.counts, 1)
    return float(ap.mean())


def _take_users(relevant: UserItems, idx: np.ndarray) -> UserItems:
    """The rows `idx` of a UserItems (repeats allowed), in that order."""
    counts = relevant.counts[idx]
    starts = relevant.indptr[idx]
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return UserItems(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
                     relevant.indices[np.repeat(starts, counts) + offsets])


def bootstrap_ci(recs: np.ndarray, relevant: UserItems, k: int, n_items: int, metric: str,
                 n_boot: int = 200, seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of a metric over test users resampled with replacement: how
    far the number would move on another draw of users of the same size."""
    rng = np.random.default_rng(seed)
    n = len(recs)
    values = [ranking_metrics(recs[idx], _take_users(relevant, idx), k, n_items)[metric]
              for idx in (rng.integers(0, n, n) for _ in range(n_boot))]
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def score(recs: np.ndarray, split: Split, k: int, ci: bool = False) -> dict[str, float]:
    """Metrics at k of a ranking; with `ci`, the bootstrap interval of NDCG@k as
    `ndcg_lo@k` / `ndcg_hi@k`."""
    h = split.holdout
    values = ranking_metrics(recs, h.relevant, k, h.n_items)
    values[f"map_ms@{k}"] = map_ms_at_k(recs, h.relevant, k)
    values[f"ild@{k}"] = intra_list_diversity(np.asarray(recs)[:, :k], split.conf_train)
    if ci:
        lo, hi = bootstrap_ci(recs, h.relevant, k, h.n_items, f"ndcg@{k}")
        values[f"ndcg_lo@{k}"], values[f"ndcg_hi@{k}"] = lo, hi
    return values


def rank_selected(split: Split, events: IndexedEvents, k: int, config: SelectionConfig
                  ) -> tuple[np.ndarray, Selection]:
    """What `recsys train` would serve, by its own code (recsys.selection.select): tuned and
    chosen on validation carved from this split's training part only, the winner fitted on
    the whole training part, ranked for the test users."""
    selection = select(events, split.train_mask, config)
    train = weight_matrix(events, split.train_mask)
    sequences = (training_sequences(events, split.train_mask)
                 if selection.winning.kind == KIND_NEURAL else None)
    model = fit_on(selection.winner, train, selection.winning.params, config, sequences)
    sub = train[split.holdout.users]
    holdout = replace(split.holdout, seen=UserItems(sub.indptr.astype(np.int64),
                                                    sub.indices.astype(np.int64)),
                      seen_values=np.asarray(sub.data))
    return model.rank(holdout, k), selection


def selection_config(settings: Settings, protocol: str, k: int) -> SelectionConfig:
    """The trainer's defaults; the validation carve follows the protocol (time: the newest
    events of the training part, as the trainer does; stratified: per-user random)."""
    return config_from_settings(settings, k=k, metric=f"ndcg@{k}",
                                validation="random" if protocol == "stratified" else "time")


def evaluate_selected(split: Split, events: IndexedEvents, k: int, config: SelectionConfig
                      ) -> tuple[dict[str, float], dict[str, Any]]:
    """The `selected` row and its record (winner, reason, leaderboard on validation)."""
    started = time.perf_counter()
    recs, chosen = rank_selected(split, events, k, config)
    row = {**score(recs, split, k, ci=True), "tune_seconds": chosen.seconds,
           "seconds": time.perf_counter() - started}
    return row, {"winner": chosen.winner, "reason": chosen.reason,
                 "params": chosen.winning.params,
                 "leaderboard": chosen.as_manifest()["leaderboard"]}


def evaluate_split(split: Split, events: IndexedEvents, k: int, params: AlsParams,
                   tuned: AlsParams | None = None, models: Sequence[str] = DEFAULT_MODELS,
                   neural: NeuralParams | None = None,
                   items: Mapping[str, ItemAttributes] | None = None
                   ) -> dict[str, dict[str, float]]:
    """The metrics of `models` (evaluation.MODELS) on one split, keyed by row name (plus
    `seconds`). With `items` (attributes by item id) the content rows of
    evaluation.content_rows: the cold-items protocol's table, the others' `hybrid` row."""
    if split.holdout.n_users == 0:
        raise EvaluationError(f"{split.protocol} split has no test users: the source is too "
                              "small or its users do not come back")
    table: dict[str, dict[str, float]] = {}
    if split.protocol == "cold-items":
        if not items:
            raise EvaluationError("the cold-items protocol ranks items by their attributes: "
                                  "give them with --items SPEC")
        table, _record = cold_item_rows(split, events, params, k, items, params.seed, score)
        return table
    if "popularity" in models:
        started = time.perf_counter()
        table["popularity"] = {**score(rank_popularity(split, events, k), split, k, ci=True),
                               "seconds": time.perf_counter() - started}
    if not split.holdout.exclude_seen:
        started = time.perf_counter()
        table["history (buy again)"] = {**score(rank_history(split, events, k), split, k,
                                                ci=True),
                                        "seconds": time.perf_counter() - started}
    if "knn" in models:
        started = time.perf_counter()
        table["item-kNN"] = {**score(rank_item_knn(split, k), split, k, ci=True),
                             "seconds": time.perf_counter() - started}
    for name, p in (("ALS", params), ("ALS (tuned)", tuned)):
        if p is None or "als" not in models:
            continue
        started = time.perf_counter()
        recs, factors = rank_als(split, events, p, k)
        table[name] = {**score(recs, split, k, ci=True), "fit_seconds": factors.seconds,
                       "seconds": time.perf_counter() - started}
        if items and name == "ALS" and split.holdout.exclude_seen:
            table.update(hybrid_rows(split, events, p, k, items, factors.item_factors,
                                     p.seed, score))
    if "neural" in models:
        started = time.perf_counter()
        recs, fit_s = rank_neural(split, events, neural or NeuralParams(seed=params.seed), k)
        table["neural"] = {**score(recs, split, k, ci=True), "fit_seconds": fit_s,
                           "seconds": time.perf_counter() - started}
    return table


def rating_rmse(frame: pd.DataFrame, events: IndexedEvents, split: Split,
                seed: int = 42) -> dict[str, Any] | None:
    """RMSE of each rating predictor on held-out ratings of known users and items; None when
    the source has no explicit ratings."""
    is_rating = (frame["event_type"].to_numpy() == EventType.RATING.value) \
        & frame["value"].notna().to_numpy()
    train = split.train_mask & is_rating
    test = split.test_mask & is_rating
    if not train.any() or not test.any():
        return None
    rows, cols = events.rows.astype(np.int64), events.cols.astype(np.int64)
    ratings = frame["value"].to_numpy(dtype=np.float64)
    known_users = np.bincount(rows[train], minlength=events.shape[0]) > 0
    known_items = np.bincount(cols[train], minlength=events.shape[1]) > 0
    test &= known_users[rows] & known_items[cols]
    if not test.any():
        return None
    out: dict[str, Any] = {"n_train": int(train.sum()), "n_test": int(test.sum()), "rmse": {}}
    for model in rating_models(seed):
        started = time.perf_counter()
        model.fit(rows[train], cols[train], ratings[train])
        out["rmse"][model.name] = rmse(model.predict(rows[test], cols[test]), ratings[test])
        log.info("RMSE %s: %.4f (%.2fs)", model.name, out["rmse"][model.name],
                 time.perf_counter() - started)
    return out


# --- the run --------------------------------------------------------------------------------
def dataset_stats(frame: pd.DataFrame) -> dict[str, Any]:
    return {
        "events": len(frame), "users": int(frame["user_id"].nunique()),
        "items": int(frame["item_id"].nunique()),
        "event_types": {str(k): int(v) for k, v in frame["event_type"].value_counts().items()},
        "first_event": pd.to_datetime(int(frame["timestamp"].min()), unit="ms").isoformat(),
        "last_event": pd.to_datetime(int(frame["timestamp"].max()), unit="ms").isoformat(),
    }


def run_evaluation(frame: pd.DataFrame, settings: Settings, out_dir: Path, *, k: int = 10,
                   protocols: Sequence[str] = ("time",), source: str = "frame",
                   tuned: Mapping[str, Mapping[str, Any]] | None = None,
                   replay: bool = False, replay_options: Mapping[str, Any] | None = None,
                   references: Sequence[str] = (),
                   models: Sequence[str] = DEFAULT_MODELS,
                   items: Mapping[str, ItemAttributes] | None = None,
                   items_source: str | None = None) -> dict[str, Any]:
    """Evaluate every model under each protocol; write metrics.json, report.md, charts.
    `items` (attributes by item id) adds the content rows (evaluation.content_rows)."""
    if k < 1:
        raise EvaluationError("k must be >= 1")
    from evaluation.references import REFERENCES, check_available, reference_rankings

    versions = check_available(references)  # a missing extra fails before any fit
    if len(frame) < 10:
        raise EvaluationError(f"the source has {len(frame)} events; too few to evaluate")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    events = index_events(frame, settings.event_weights,
                          negative_rating_max=settings.negative_rating_max)
    params = als_params(settings)
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise EvaluationError(f"unknown model(s) {unknown}; known: {MODELS}")
    neural = neural_params(settings) if "neural" in models else None
    if neural is not None:
        import_torch()  # say so now, not after the other models ran
    report: dict[str, Any] = {
        "source": source, "k": k, "dataset": dataset_stats(frame),
        "als_settings": asdict(params), "knn_neighbours": KNN_NEIGHBOURS,
        "event_weights": dict(settings.event_weights), "protocols": {},
        "models": list(models),
        **({"items": {"source": items_source or "given", "n_items": len(items)}}
           if items else {}),
        **({"neural_settings": asdict(neural)} if neural is not None else {}),
        "environment": {"python": platform.python_version()},
    }
    for protocol in protocols:
        split = make_split(protocol, events, params.alpha,
                           holdout_fraction=settings.trainer_holdout_fraction,
                           seed=settings.random_seed)
        tuned_params = (als_params(settings, tuned[protocol])
                        if tuned and protocol in tuned else None)
        log.info("%s split: %d train / %d test events, %d test users", protocol,
                 split.n_train, split.n_test, split.holdout.n_users)
        entry: dict[str, Any] = {
            "description": split.description,
            "n_train_events": split.n_train, "n_test_events": split.n_test,
            "n_test_users": split.holdout.n_users, "n_test_pairs": split.holdout.n_test_pairs,
            "n_items_ranked": split.holdout.n_items,
            "n_repeat_pairs": split.holdout.n_repeat_pairs,
            "models": evaluate_split(split, events, k, params, tuned_params, models, neural,
                                     items),
        }
        cold = protocol == "cold-items"
        if "selected" in models and not cold:
            entry["models"]["selected"], entry["selected"] = evaluate_selected(
                split, events, k, selection_config(settings, protocol, k))
        if references and not cold:
            for row, (recs, seconds) in reference_rankings(split, events, k,
                                                           references).items():
                entry["models"][row] = {**score(recs, split, k, ci=True), "seconds": seconds}
            entry["references"] = {
                REFERENCES[n].row: REFERENCES[n].describe.format(version=versions[n])
                for n in references}
            entry["ndcg_ratio_to_reference"] = reference_ratios(entry["models"],
                                                                entry["references"], k)
        if tuned_params is not None:
            entry["als_tuned"] = asdict(tuned_params)
        if split.holdout.cutoff_ms >= 0:
            entry["cutoff"] = pd.to_datetime(split.holdout.cutoff_ms, unit="ms").isoformat()
        ratings = None if cold else rating_rmse(frame, events, split, settings.random_seed)
        if ratings is not None:
            entry["ratings"] = ratings
        report["protocols"][protocol] = entry
    if replay:
        from evaluation.replay import run_replay

        result = run_replay(frame, settings, k=k, params=_replay_params(settings, tuned),
                            neural=neural, **dict(replay_options or {}))
        result.draw(out_dir)
        report["replay"] = result.to_json()
    report["seconds"] = time.perf_counter() - started
    write_report(report, out_dir)
    return report


def reference_ratios(models: Mapping[str, Mapping[str, float]], references: Sequence[str],
                     k: int) -> dict[str, dict[str, float]]:
    """NDCG@k of every row divided by each reference row's: {reference: {model: ratio}}."""
    key = f"ndcg@{k}"
    out: dict[str, dict[str, float]] = {}
    for ref in references:
        base = models[ref][key]
        out[ref] = {name: (values[key] / base if base > 0 else float("nan"))
                    for name, values in models.items() if name != ref and key in values}
    return out


def _replay_params(settings: Settings,
                   tuned: Mapping[str, Mapping[str, Any]] | None) -> AlsParams:
    # The replay trains on the past and predicts the future: the time protocol's tuning fits.
    if tuned and "time" in tuned:
        return als_params(settings, tuned["time"])
    return als_params(settings)


# --- output ---------------------------------------------------------------------------------
def _metric_keys(k: int) -> list[str]:
    return [f"{m}@{k}" for m in METRIC_NAMES] + [f"map_ms@{k}", f"ild@{k}"]


def results_table(models: Mapping[str, Mapping[str, float]], k: int,
                  reference: Mapping[str, Mapping[str, float]] | None = None,
                  keys: Sequence[str] | None = None) -> str:
    keys = list(keys or _metric_keys(k))
    lo, hi = f"ndcg_lo@{k}", f"ndcg_hi@{k}"
    lines = ["| model | " + " | ".join(keys) + f" | ndcg@{k} 95% CI | seconds |",
             "|---|" + "---:|" * (len(keys) + 2)]
    for name, values in models.items():
        cells = [f"{values[key]:.4f}" if key in values else "" for key in keys]
        ci = f"{values[lo]:.3f}-{values[hi]:.3f}" if lo in values else ""
        lines.append(f"| {name} | " + " | ".join(cells)
                     + f" | {ci} | {values.get('seconds', 0):.1f} |")
    for name, values in (reference or {}).items():
        cells = [f"{values[key]:.3f}" if key in values else "" for key in keys]
        lines.append(f"| *{name}* | " + " | ".join(cells) + " | | |")
    return "\n".join(lines)


def floor_warnings(models: Mapping[str, Mapping[str, float]], k: int) -> list[str]:
    """Models that do not beat popularity (the floor) on NDCG@k: they must not be served
    silently, so the report and the printed table say so."""
    key = f"ndcg@{k}"
    floor = models.get("popularity", {}).get(key)
    if floor is None:
        return []
    return [f"{name} is below popularity on {key} ({values[key]:.4f} < {floor:.4f})"
            for name, values in models.items()
            if name != "popularity" and key in values and values[key] < floor]


def _is_ml100k(report: Mapping[str, Any]) -> bool:
    d = report["dataset"]
    return (d["events"], d["users"], d["items"]) == (100_000, 943, 1_682)


def _neural_sentence(n: Mapping[str, Any]) -> str:
    return (f" neural: a one-block self-attention user tower over each user's newest "
            f"{n['window']} distinct items (recsys.sequence_model), {n['dim']} dimensions, "
            f"trained to predict each of the next {n['horizon']} items (softmax), up to "
            f"{n['epochs']} epochs or {n['time_budget_s']:.0f} s, seed {n['seed']}; test users' "
            "vectors from their training sequence.")


def render_report(report: Mapping[str, Any]) -> str:
    k = report["k"]
    a = report["als_settings"]
    d = report["dataset"]
    lines = [
        f"# Offline evaluation: `{report['source']}`", "",
        f"{d['events']:,} events, {d['users']:,} users, {d['items']:,} items, "
        f"{d['first_event'][:10]} to {d['last_event'][:10]}; event types "
        + ", ".join(f"{t} {n:,}" for t, n in d["event_types"].items()) + ".", "",
        f"ALS (settings): factors {a['factors']}, regularization {a['regularization']}, "
        f"alpha {a['alpha']}, iterations {a['iterations']}, seed {a['seed']}; confidence "
        f"c = 1 + alpha * sum of event weights {report['event_weights']}. "
        f"item-kNN: implicit CosineRecommender, K = {report['knn_neighbours']}. "
        "Popularity: distinct training users per item."
        + (_neural_sentence(report["neural_settings"]) if "neural_settings" in report else ""),
        "",
        f"Metrics at k = {k}, binary relevance, averaged over test users. `map@{k}` divides "
        f"each user's AP by min(k, n_u); `map_ms@{k}` by n_u (Microsoft Recommenders' MAP). "
        f"The NDCG interval is a 95 % bootstrap over test users (200 resamples): differences "
        f"inside it are noise.",
    ]
    for protocol, entry in report["protocols"].items():
        lines += ["", f"## Protocol: {protocol}", "", f"Protocol: {entry['description']}.", "",
                  f"{entry['n_train_events']:,} training events, {entry['n_test_events']:,} "
                  f"test events; {entry['n_test_users']:,} test users, "
                  f"{entry['n_test_pairs']:,} held-out (user, item) pairs, "
                  f"{entry['n_items_ranked']:,} items ranked"
                  + (f"; {entry['n_repeat_pairs']:,} held-out pairs are re-buys (the user had "
                     "the item in training)" if protocol == "time-repeat" else "")
                  + (f"; cutoff {entry['cutoff']}" if "cutoff" in entry else "") + "."]
        if "als_tuned" in entry:
            t = entry["als_tuned"]
            lines += ["", f"ALS (tuned, by `recsys tune` on a validation split of the training "
                      f"part): factors {t['factors']}, regularization {t['regularization']}, "
                      f"alpha {t['alpha']}, iterations {t['iterations']}."]
        reference = REFERENCE_ML100K if protocol == "stratified" and _is_ml100k(report) \
            else None
        lines += ["", results_table(entry["models"], k, reference)]
        if "selected" in entry:
            chosen = entry["selected"]
            lines += ["", f"`selected`: what `recsys train` would serve, chosen by the trainer's "
                      f"own code (recsys.selection) with default settings on validation carved "
                      f"from this training part: **{chosen['winner']}** "
                      f"{chosen['params']} ({chosen['reason']})."]
        below = floor_warnings(entry["models"], k)
        if below:
            lines += [""] + [f"**Warning**: {w}." for w in below]
        for ref, text in entry.get("references", {}).items():
            ratios = entry["ndcg_ratio_to_reference"][ref]
            lines += ["", f"**{ref}**: {text}. NDCG@{k} relative to it: "
                      + ", ".join(f"{name} {ratio:.2f}x" for name, ratio in ratios.items())
                      + "."]
        if reference:
            lines += ["", "*Italic rows*: Microsoft Recommenders' published ML-100K benchmark "
                      "(same protocol and split, their run), for comparison."]
        lines += ["", f"![{protocol} metrics](metrics_{protocol}.png)"]
        if "ratings" in entry:
            r = entry["ratings"]
            lines += ["", f"RMSE on {r['n_test']:,} held-out ratings of known users and items "
                      f"({r['n_train']:,} training ratings):", "", "| rating predictor | RMSE |",
                      "|---|---:|"]
            lines += [f"| {name} | {value:.4f} |" for name, value in r["rmse"].items()]
    if "replay" in report:
        from evaluation.replay import render_replay

        lines += ["", render_replay(report["replay"])]
    lines += ["", f"Run time: {report['seconds']:.1f} s."]
    return "\n".join(lines) + "\n"


def write_report(report: Mapping[str, Any], out_dir: Path) -> None:
    out_dir = Path(out_dir)
    k = report["k"]
    for protocol, entry in report["protocols"].items():
        charts.grouped_bars(entry["models"], [f"{m}@{k}" for m in HEADLINE_METRICS],
                            out_dir / f"metrics_{protocol}.png",
                            f"{report['source']}: {protocol} split, k = {k}")
    (out_dir / "metrics.json").write_text(json.dumps(report, indent=2, default=str) + "\n",
                                          encoding="utf-8")
    (out_dir / "report.md").write_text(render_report(report), encoding="utf-8")
    log.info("evaluation report written to %s", out_dir)


def summary_table(report: Mapping[str, Any]) -> str:
    """The table the CLI prints: one block per protocol, the main metrics."""
    k = report["k"]
    keys = [f"{m}@{k}" for m in (*HEADLINE_METRICS, "coverage", "ild")]
    out = []
    for protocol, entry in report["protocols"].items():
        out += [f"\n{protocol} split ({entry['n_test_users']:,} test users)",
                results_table(entry["models"], k, keys=keys)]
        out += [f"WARNING: {w}" for w in floor_warnings(entry["models"], k)]
        for ref, ratios in entry.get("ndcg_ratio_to_reference", {}).items():
            out += [f"ndcg@{k} / {ref}: " + ", ".join(f"{name} {ratio:.2f}x"
                                                      for name, ratio in ratios.items())]
        if "ratings" in entry:
            out += ["RMSE: " + ", ".join(f"{n} {v:.4f}"
                                        for n, v in entry["ratings"]["rmse"].items())]
    if "replay" in report:
        out += ["\nreplay (" + report["replay"]["protocol"] + ")"]
        out += [f"  {name}: hit_rate@{k} {v['hit_rate']:.4f}, ndcg@{k} {v['ndcg']:.4f}"
                for name, v in report["replay"]["overall"].items()]
    return "\n".join(out)
