"""Streaming replay: what the real-time layer buys, measured on the timeline of a source.

Protocol (stated in every report):

1. Events are ordered by time. A model is fitted (recsys.als.fit_als on the trainer's
   confidence matrix) on the first `train_fraction` of them (cut at the event-count quantile).
2. The rest is replayed one event at a time, in order. Before an event is applied, if its
   item is new to the user (the user never touched it before, in training or replay), the
   event is a *target*: each variant ranks all items its model knows, minus everything the
   user touched so far, and the target's rank gives hit@k (rank < k) and NDCG@k
   (1 / log2(rank + 2) when a hit). Ties count against the target. A user without a vector
   gets the variant's popularity ranking (distinct users per item in its training data), as
   serving falls back.
3. Then the event is applied to the user's stream state.
4. Targets are bucketed into `n_buckets` groups of equal size in time order; each bucket's
   mean hit rate and NDCG per variant is one point of the chart.

Targets are also split by item, per variant: known to the model the variant serves at the
target's time (its last refit; the first model for the variants that never refit), or not
("new items": only item fold-in can recommend them). The two variants of a pair (with and
without item fold-in) serve the same models, so they are scored on the same targets.

Variants:

* popularity         the popularity ranking of the first model's data, for everybody;
* static             the first model; user vectors folded in once at the cutoff;
* static + fold-in   the first model; after each event the user's vector is recomputed by the
                     stream worker's own code path: `recsys.userstate.UserState.apply` (the
                     bounded, deduplicated history), `recsys.userstate.fold_in_inputs` (known
                     items and their confidences) and `recsys.foldin.fold_in_batch`, the
                     calls `stream.processor` makes;
* periodic retrain   a full refit on all events so far at `retrains` evenly spaced points of
                     the replay; vectors recomputed at each switch, then frozen;
* retrain + fold-in  periodic refits plus per-event fold-in: the architecture as deployed.
* ... + item fold-in the two fold-in variants plus the stream's item fold-in: after each
                     event on an item the variant's model does not know, the item's vector is
                     the item half-step against its recent users' vectors
                     (`recsys.foldin.item_fold_in_inputs` and `fold_in_items`, the calls of
                     stream.item_foldin, with the stream's bounds and minimum of users);
                     after a refit, the items the new model still lacks are folded again.
* neural             (with `neural` params) the neural user tower trained on the first part
                     (recsys.sequence_train); after each event the user's vector is the tower's
                     output on their stream state, by the stream worker's own calls
                     (`recsys.userstate.tower_inputs`, `UserTower.user_vectors`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evaluation import charts
from recsys.als import AlsParams, als_params, fit_als
from recsys.baselines import PopularityRecommender
from recsys.confidence import confidence
from recsys.experiments import report
from recsys.foldin import fold_in_batch, fold_in_items, gram, item_fold_in_inputs
from recsys.matrix import IndexedEvents, confidence_matrix, index_events
from recsys.sequence_model import UserTower
from recsys.sequence_train import NeuralParams, fit_neural_on
from recsys.settings import Settings
from recsys.split import cutoff_for
from recsys.userstate import Limits, UserState, fold_in_inputs, tower_inputs

log = logging.getLogger(__name__)

POPULARITY, STATIC, FOLDIN, RETRAIN, RETRAIN_FOLDIN, NEURAL = (
    "popularity", "static", "static + fold-in", "periodic retrain", "retrain + fold-in",
    "neural")
ITEM_FOLDIN, RETRAIN_ITEM_FOLDIN = ("static + fold-in + item fold-in",
                                    "retrain + fold-in + item fold-in")
VARIANTS = (POPULARITY, STATIC, FOLDIN, ITEM_FOLDIN, RETRAIN, RETRAIN_FOLDIN,
            RETRAIN_ITEM_FOLDIN)
_FOLDING = (FOLDIN, ITEM_FOLDIN, RETRAIN_FOLDIN, RETRAIN_ITEM_FOLDIN, NEURAL)
_RETRAINING = (RETRAIN, RETRAIN_FOLDIN, RETRAIN_ITEM_FOLDIN)
_ITEM_FOLDING = (ITEM_FOLDIN, RETRAIN_ITEM_FOLDIN)
KNOWN_ITEMS, NEW_ITEMS = "items known to the last refit", "items new since the last refit"


@dataclass
class ReplayModel:
    """A fitted model as the stream and serving see it: item factors of the items it knows
    (`item_index`: item id -> row, like ModelVersion.item_index), their Gram matrix, and the
    popularity fallback of its training data."""

    item_factors: np.ndarray   # (n_items, k) float32; rows of unknown items are zero
    yty: np.ndarray
    allowed: np.ndarray        # bool per item column: the model knows the item
    item_index: dict[str, int]
    popularity: np.ndarray
    regularization: float
    alpha: float
    fitted_at_ms: int
    tower: UserTower | None = None  # neural: vectors come from the tower, not the fold-in
    xtx: np.ndarray | None = None  # Gram matrix of the user factors (item fold-in)


def fit_model(events: IndexedEvents, mask: np.ndarray, params: AlsParams) -> ReplayModel:
    conf = confidence_matrix(events, params.alpha, mask)
    factors = fit_als(conf, params)
    allowed = np.bincount(conf.indices, minlength=conf.shape[1]) > 0
    items = np.array(factors.item_factors, dtype=np.float32, copy=True)
    items[~allowed] = 0.0  # never trained: no score at all, and out of YtY
    popularity = PopularityRecommender(conf.shape[1]).fit(
        events.rows[mask], events.cols[mask], events.weights[mask]).scores
    index = {str(events.item_ids[c]): int(c) for c in np.flatnonzero(allowed)}
    return ReplayModel(items, gram(items), allowed, index, popularity, params.regularization,
                       params.alpha, int(events.timestamps[mask].max()),
                       xtx=gram(factors.user_factors))


def fit_neural_model(events: IndexedEvents, mask: np.ndarray, params: NeuralParams,
                     popularity: np.ndarray) -> ReplayModel:
    model, _ = fit_neural_on(events, mask, params)
    allowed = np.bincount(events.cols[mask], minlength=events.shape[1]) > 0
    index = {str(events.item_ids[c]): int(c) for c in np.flatnonzero(allowed)}
    return ReplayModel(model.item_factors, np.zeros((0, 0)), allowed, index, popularity, 0.0,
                       0.0, int(events.timestamps[mask].max()), model.tower())


def user_vectors(model: ReplayModel, states: Mapping[int, UserState]) -> dict[int, np.ndarray]:
    """Fold in the given users under `model`, as the stream worker does after an event or a
    model switch: the stream's own `recsys.userstate.fold_in_inputs`, then `fold_in_batch` (for
    a neural model `recsys.userstate.tower_inputs`, then the tower)."""
    if model.tower is not None:
        users, sequences = tower_inputs(states.items(), model.item_index, model.tower.window)
        if not users:
            return {}
        return dict(zip(users, model.tower.user_vectors(sequences.rows), strict=True))
    users, histories = fold_in_inputs(states.items(), model.item_index, model.alpha)
    if not users:
        return {}
    vectors = fold_in_batch(model.item_factors, model.yty, model.regularization, histories)
    return dict(zip(users, vectors, strict=True))


class ItemFolding:
    """One variant's item matrix as serving would hold it: the model's item factors plus the
    stream's vectors for the items the model does not know."""

    def __init__(self, model: ReplayModel) -> None:
        self.reset(model)

    def reset(self, model: ReplayModel) -> None:
        self.factors = np.array(model.item_factors, dtype=np.float32, copy=True)
        self.allowed = model.allowed.copy()


def target_rank(scores: np.ndarray, allowed: np.ndarray, seen: np.ndarray, item: int) -> float:
    """0-based rank of `item` among the allowed, unseen items (ties count against it);
    inf when the model cannot recommend the item at all."""
    if not allowed[item]:
        return float("inf")
    ahead = scores >= scores[item]
    ahead &= allowed
    if len(seen):
        ahead[seen] = False
    return float(ahead.sum() - 1)


@dataclass
class ReplayResult:
    protocol: str
    params: dict[str, Any]
    k: int
    cutoff: str
    n_train_events: int
    n_replay_events: int
    n_targets: int
    retrain_times: list[str]
    buckets: list[dict[str, Any]]
    overall: dict[str, dict[str, float]]
    by_user_kind: dict[str, dict[str, dict[str, float]]]
    seconds: float = 0.0
    charts: list[str] = field(default_factory=list)
    # The online experiment report's figures on logged data (recsys.experiments.report): each
    # target is one served list ("impression") and a hit is its "click"; popularity is the
    # control, every other variant z-tested against it.
    experiment: dict[str, Any] = field(default_factory=dict)
    by_item_kind: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def draw(self, out_dir: Path) -> list[Path]:
        out_dir = Path(out_dir)
        mids = [pd.Timestamp(b["mid"]) for b in self.buckets]
        markers = [pd.Timestamp(t) for t in self.retrain_times]
        per_bucket = self.n_targets // max(1, len(self.buckets))
        paths = []
        for metric, label in (("hit_rate", "hit rate"), ("ndcg", "NDCG")):
            series = {v: [b["variants"][v][metric] for b in self.buckets] for v in self.overall}
            path = charts.lines_over_time(
                mids, series, out_dir / f"replay_{metric}.png",
                f"Replay: {label}@{self.k} of each next new item, over time",
                f"{label}@{self.k}", xlabel=f"time (buckets of ~{per_bucket:,} targets)",
                markers=markers, marker_label="retrain")
            paths.append(path)
        self.charts = [p.name for p in paths]
        return paths


def offline_experiment(hits: Mapping[str, np.ndarray], k: int) -> dict[str, Any]:
    """Replay variants as an A/B report: per variant, lists (targets) and clicks (hits@k),
    CTR with its 95 % Wilson interval, z-test against popularity: the same figures
    `recsys experiment report` gives online (docs/feedback.md)."""
    order = [POPULARITY, *[v for v in hits if v != POPULARITY]] if POPULARITY in hits \
        else list(hits)
    counts = {v: {"impressions": int(hits[v].size), "click": int(hits[v].sum())}
              for v in order}
    rep = report(f"replay@{k}", counts)
    return {"variants": [{key: v[key] for key in ("name", "impressions", "clicks", "ctr",
                                                  "ctr_ci95")} for v in rep["variants"]],
            "comparisons": rep.get("comparisons", [])}


def _summary(hit: np.ndarray, ndcg: np.ndarray) -> dict[str, float]:
    return {"hit_rate": float(hit.mean()) if hit.size else 0.0,
            "ndcg": float(ndcg.mean()) if ndcg.size else 0.0, "n": int(hit.size)}


def run_replay(frame: pd.DataFrame, settings: Settings, *, k: int = 10,
               params: AlsParams | None = None, train_fraction: float = 0.5,
               n_buckets: int = 10, retrains: int = 4,
               neural: NeuralParams | None = None) -> ReplayResult:
    if not 0.0 < train_fraction < 1.0:
        raise ValueError("train_fraction must be in (0, 1)")
    if n_buckets < 1 or retrains < 0:
        raise ValueError("n_buckets must be >= 1 and retrains >= 0")
    started = time.perf_counter()
    if params is None:
        params = als_params(settings)
    events = index_events(frame, settings.event_weights,
                          negative_rating_max=settings.negative_rating_max)
    ts = events.timestamps
    cutoff = cutoff_for(ts, 1.0 - train_fraction)
    train = ts < cutoff
    replay_pos = np.flatnonzero(~train)
    if train.sum() == 0 or len(replay_pos) == 0:
        raise ValueError("the split left no training or no replay events")
    event_ids = frame["event_id"].astype(str).to_numpy()
    item_ids = np.asarray(events.item_ids, dtype=object).astype(str)
    limits = Limits(settings.stream_history_max_items, settings.stream_dedupe_ids)

    states: dict[int, UserState] = {}
    seen: dict[int, list[int]] = {}

    def apply(pos: int) -> int:
        user = int(events.rows[pos])
        state = states.setdefault(user, UserState())
        # One partition for the whole replay; the event's position is its offset.
        state.apply(event_ids[pos], item_ids[events.cols[pos]], float(events.weights[pos]),
                    int(ts[pos]), 0, int(pos), limits)
        items = seen.setdefault(user, [])
        col = int(events.cols[pos])
        if col not in items:
            items.append(col)
        return user

    for pos in np.flatnonzero(train):
        apply(int(pos))
    known_users = set(states)

    first = fit_model(events, train, params)
    variants = VARIANTS + ((NEURAL,) if neural is not None else ())
    folding = [v for v in _FOLDING if v in variants]
    models = {v: first for v in variants}
    if neural is not None:
        models[NEURAL] = fit_neural_model(events, train, neural, first.popularity)
    vectors: dict[str, dict[int, np.ndarray]] = {v: {} for v in variants}
    vectors[STATIC] = user_vectors(first, states)
    # Every ALS variant starts from the first model's vectors of the users seen before the
    # cutoff (the item-folding ones too: without them those users fell back to popularity).
    for v in variants:
        if v not in (POPULARITY, STATIC, NEURAL):
            vectors[v] = dict(vectors[STATIC])
    if neural is not None:
        vectors[NEURAL] = user_vectors(models[NEURAL], states)
    dirty: dict[str, set[int]] = {v: set() for v in folding}
    # The stream's item fold-in: each item's most recent users (user -> (confidence, time)),
    # bounded like stream_item_foldin_max_users, and each item-folding variant's matrix.
    recent: dict[int, dict[int, tuple[float, int]]] = {}
    listed: set[int] = set()  # users in the recent list of an item some model does not know
    max_users = settings.stream_item_foldin_max_users
    min_users = settings.stream_item_foldin_min_users
    item_folding = {v: ItemFolding(models[v]) for v in _ITEM_FOLDING if v in variants}

    def refresh(v: str, users: list[int]) -> None:
        """Fold in the variant's users whose vector is older than their history."""
        stale = {u: states[u] for u in users if u in dirty[v]}
        if not stale:
            return
        fresh_vectors = user_vectors(models[v], stale)
        for u in stale:
            if u in fresh_vectors:
                vectors[v][u] = fresh_vectors[u]
            else:
                vectors[v].pop(u, None)
            dirty[v].discard(u)

    def fold_item(v: str, col: int) -> None:
        """The stream's item fold-in of `col` under the variant's model: the item's recent
        users, folded in first when their vector is stale (the stream's batch users are)."""
        model = models[v]
        users = recent.get(col)
        if model.xtx is None or model.allowed[col] or not users:
            return
        refresh(v, list(users))
        inputs = item_fold_in_inputs([(col, [(u, c) for u, (c, _) in users.items()])],
                                     vectors[v], min_users)
        if inputs.items:
            state = item_folding[v]
            state.factors[col] = fold_in_items(model.xtx, model.regularization,
                                               inputs.inputs)[0]
            state.allowed[col] = True

    # Refit points: evenly spaced positions of the replay (the refit sees every event before).
    refit_at = set(int(replay_pos[len(replay_pos) * j // (retrains + 1)])
                   for j in range(1, retrains + 1))
    retrain_times: list[str] = []

    hits: dict[str, list[float]] = {v: [] for v in variants}
    gains: dict[str, list[float]] = {v: [] for v in variants}
    target_ts: list[int] = []
    target_new_user: list[bool] = []
    target_new_item: dict[str, list[bool]] = {v: [] for v in variants}
    discount = 1.0 / np.log2(np.arange(2, k + 2))

    for pos in replay_pos:
        pos = int(pos)
        if pos in refit_at:
            so_far = ts < ts[pos]
            model = fit_model(events, so_far, params)
            retrain_times.append(pd.to_datetime(int(ts[pos]), unit="ms").isoformat())
            fresh = user_vectors(model, states)
            for v in _RETRAINING:
                models[v] = model
                vectors[v] = dict(fresh)
            dirty[RETRAIN_FOLDIN].clear()
            dirty[RETRAIN_ITEM_FOLDIN].clear()
            # A switch starts the item vectors afresh and re-folds what the model lacks.
            item_folding[RETRAIN_ITEM_FOLDIN].reset(model)
            for col in recent:
                fold_item(RETRAIN_ITEM_FOLDIN, col)
            log.info("replay: refit at %s on %d events", retrain_times[-1], int(so_far.sum()))
        user, col = int(events.rows[pos]), int(events.cols[pos])
        user_seen = seen.get(user, [])
        if col not in user_seen:
            folded: dict[int, dict[int, np.ndarray]] = {}  # by model: until the first refit
            for v in folding:                              # both fold-in variants share one
                if user in dirty[v]:
                    key = id(models[v])
                    if key not in folded:
                        folded[key] = user_vectors(models[v], {user: states[user]})
                    if user in folded[key]:
                        vectors[v][user] = folded[key][user]
                    else:  # nothing the model knows in the history: popularity fallback
                        vectors[v].pop(user, None)
                    dirty[v].discard(user)
            exclude = np.asarray(user_seen, dtype=np.int64)
            for v in variants:
                model = models[v]
                x = vectors[v].get(user) if v != POPULARITY else None
                factors, allowed = model.item_factors, model.allowed
                if v in item_folding:
                    factors, allowed = item_folding[v].factors, item_folding[v].allowed
                scores = model.popularity if x is None else factors @ x
                r = target_rank(scores, allowed, exclude, col)
                hit = r < k
                hits[v].append(float(hit))
                gains[v].append(float(discount[int(r)]) if hit else 0.0)
            target_ts.append(int(ts[pos]))
            target_new_user.append(user not in known_users)
            for v in variants:
                target_new_item[v].append(not models[v].allowed[col])
        apply(pos)
        for v in folding:
            dirty[v].add(user)
        if item_folding:
            entry = states[user].items.get(item_ids[col])
            users = recent.setdefault(col, {})
            if entry is None or entry[0] == 0.0:
                users.pop(user, None)
            else:
                users[user] = (float(confidence(entry[0], params.alpha)), int(ts[pos]))
                if len(users) > max_users:
                    del users[min(users, key=lambda u: users[u][1])]
            if any(not models[v].allowed[col] for v in item_folding):
                listed.add(user)
            # The stream folds every event's user in at once, so an item's recent users have
            # their latest vectors when it is solved: the same here, once per model, for the
            # users in the recent lists of unknown items (the only ones an item solve reads).
            folded_now: dict[int, dict[int, np.ndarray]] = {}
            for v in item_folding if user in listed else ():
                key = id(models[v])
                if key not in folded_now:
                    folded_now[key] = user_vectors(models[v], {user: states[user]})
                if user in folded_now[key]:
                    vectors[v][user] = folded_now[key][user]
                else:
                    vectors[v].pop(user, None)
                dirty[v].discard(user)
            for v in item_folding:
                fold_item(v, col)

    n_targets = len(target_ts)
    if n_targets == 0:
        raise ValueError("the replay has no targets (no user met a new item after the cutoff)")
    hit_arr = {v: np.asarray(hits[v]) for v in variants}
    gain_arr = {v: np.asarray(gains[v]) for v in variants}
    tt = np.asarray(target_ts)
    buckets = []
    for chunk in np.array_split(np.arange(n_targets), min(n_buckets, n_targets)):
        lo, hi = int(tt[chunk[0]]), int(tt[chunk[-1]])
        buckets.append({
            "start": pd.to_datetime(lo, unit="ms").isoformat(),
            "end": pd.to_datetime(hi, unit="ms").isoformat(),
            "mid": pd.to_datetime((lo + hi) // 2, unit="ms").isoformat(),
            "n": len(chunk),
            "variants": {v: _summary(hit_arr[v][chunk], gain_arr[v][chunk]) for v in variants},
        })
    new = np.asarray(target_new_user)
    new_item = {v: np.asarray(target_new_item[v], dtype=bool) for v in variants}
    result = ReplayResult(
        protocol=(f"train on the first {train_fraction:.0%} of events, replay the rest in "
                  f"time order; targets = events on items new to the user; {retrains} "
                  f"periodic refits; history limits of the stream worker "
                  f"(max {limits.max_items} items)"),
        params=asdict(params), k=k, cutoff=pd.to_datetime(cutoff, unit="ms").isoformat(),
        n_train_events=int(train.sum()), n_replay_events=len(replay_pos), n_targets=n_targets,
        retrain_times=retrain_times, buckets=buckets,
        overall={v: _summary(hit_arr[v], gain_arr[v]) for v in variants},
        by_user_kind={
            "users seen before the cutoff": {v: _summary(hit_arr[v][~new], gain_arr[v][~new])
                                             for v in variants},
            "users new after the cutoff": {v: _summary(hit_arr[v][new], gain_arr[v][new])
                                           for v in variants}},
        seconds=time.perf_counter() - started,
        experiment=offline_experiment(hit_arr, k),
        by_item_kind={
            KNOWN_ITEMS: {v: _summary(hit_arr[v][~new_item[v]], gain_arr[v][~new_item[v]])
                          for v in variants},
            NEW_ITEMS: {v: _summary(hit_arr[v][new_item[v]], gain_arr[v][new_item[v]])
                        for v in variants}},
    )
    log.info("replay: %d targets in %.1fs; hit_rate@%d %s", n_targets, result.seconds, k,
             {v: round(s["hit_rate"], 4) for v, s in result.overall.items()})
    return result


def render_replay(data: Mapping[str, Any]) -> str:
    """Markdown section for the evaluation report (from ReplayResult.to_json())."""
    k = data["k"]
    p = data["params"]
    lines = [
        "## Streaming replay", "",
        f"Protocol: {data['protocol']}. Cutoff {data['cutoff']}; {data['n_train_events']:,} "
        f"training events, {data['n_replay_events']:,} replayed, {data['n_targets']:,} "
        f"targets. ALS factors {p['factors']}, regularization {p['regularization']}, alpha "
        f"{p['alpha']}, iterations {p['iterations']}.", "",
        f"| variant | hit rate@{k} | NDCG@{k} | hit rate, users seen before | hit rate, new "
        "users |", "|---|---:|---:|---:|---:|",
    ]
    kinds = data["by_user_kind"]
    before, after = kinds["users seen before the cutoff"], kinds["users new after the cutoff"]
    for v, s in data["overall"].items():
        lines.append(f"| {v} | {s['hit_rate']:.4f} | {s['ndcg']:.4f} | "
                     f"{before[v]['hit_rate']:.4f} (n={before[v]['n']:,}) | "
                     f"{after[v]['hit_rate']:.4f} (n={after[v]['n']:,}) |")
    by_item = data.get("by_item_kind") or {}
    if by_item:
        known, fresh = by_item[KNOWN_ITEMS], by_item[NEW_ITEMS]
        lines += ["", "By the target's item: known to the model the variant serves at the "
                  "target's time (its last refit; the first model if it never refits), or new "
                  "since (only the item fold-in can recommend those before the next refit):",
                  "", f"| variant | hit rate@{k}, known items | hit rate@{k}, new "
                  f"items | NDCG@{k}, new items |", "|---|---:|---:|---:|"]
        for v in data["overall"]:
            lines.append(f"| {v} | {known[v]['hit_rate']:.4f} (n={known[v]['n']:,}) | "
                         f"{fresh[v]['hit_rate']:.4f} (n={fresh[v]['n']:,}) | "
                         f"{fresh[v]['ndcg']:.4f} |")
    experiment = data.get("experiment") or {}
    if experiment.get("variants"):
        p_values = {c["variant"]: c["p_value"] for c in experiment.get("comparisons", [])}
        lines += ["", f"As an A/B report (each target one served list, a hit@{k} its click; "
                  "the online `recsys experiment report` figures; z-test against popularity):",
                  "", "| variant | lists | clicks | CTR (95 % CI) | p vs popularity |",
                  "|---|---:|---:|---:|---:|"]
        for v in experiment["variants"]:
            lo, hi = v["ctr_ci95"]
            p_value = p_values.get(v["name"])
            lines.append(f"| {v['name']} | {v['impressions']:,} | {v['clicks']:,} | "
                         f"{v['ctr']:.2%} ({lo:.2%}-{hi:.2%}) | "
                         f"{'-' if p_value is None else f'{p_value:.3g}'} |")
    lines += [""] + [f"![replay {name}]({name})" for name in data.get("charts", [])]
    return "\n".join(lines)
