"""Fitting the content model (recsys.content) and choosing its settings by measurement.

Shared by the trainer (fit, publish) and `recsys evaluate` (the cold-items and hybrid rows),
so what is evaluated is what is served.

    fit_content(items, factors, warm, conf)
      space     = fit_feature_space(attributes of every item of the version)
      F, P, E   = features, projection (fitted on the warm items), embeddings of every item
      map       = chosen on *pseudo-cold* validation: a seeded `fraction` of the warm items is
                  hidden; each candidate map (ridge at every lam of RIDGE_GRID, knn) is fitted
                  on the other warm items; users with a hidden item are folded in from their
                  other items; only the hidden items are ranked, by x_u . mapped y_i; the best
                  NDCG@k wins. The same users then choose `cold_blend`: the hybrid weight that
                  ranks items without interactions best.
      weights   = the winning map refitted on all warm items.

    choose_blend(factors on the validation fit part, validation holdout, embeddings)
      the hybrid weight w of BLEND_GRID with the best NDCG@k on a validation holdout carved
      from training (never the test part), kept only when its per-user gain over w = 0 is
      significant (one-sided 95 %); else w = 0, plain ALS: never worse than ALS by noise.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.content import (
    BLEND_GRID,
    RIDGE_GRID,
    ContentError,
    ContentModel,
    FeatureSpace,
    content_profiles,
    embed,
    embedding_projection,
    factor_scale,
    fit_feature_space,
    hybrid_user_vectors,
    knn_map,
    ridge_map,
    ridge_scale,
    stacked_items,
)
from recsys.holdout_eval import fold_in_users
from recsys.item_attributes import ItemAttributes
from recsys.quality import UserItems, hits, ndcg_per_user, ranking_metrics
from recsys.split import Holdout
from recsys.topk import rank_by_factors

log = logging.getLogger(__name__)

DEFAULT_KNN_NEIGHBOURS = 50
SESSION_ITEMS = 5  # a "short history" for choosing session_blend
MIN_WARM_ITEMS = 10  # fewer warm items with features: no map is fitted
# a blend weight above 0 must beat w = 0 on validation by this many standard errors of the
# per-user gain (one-sided 95 %): content that only moves the noise is not served
Z_ONE_SIDED = 1.645


@dataclass(frozen=True)
class ContentConfig:
    k: int = 10
    fraction: float = 0.2  # share of the warm items hidden for the pseudo-cold validation
    seed: int = 42
    embedding_dims: int = 32
    knn_neighbours: int = DEFAULT_KNN_NEIGHBOURS
    regularization: float = 50.0  # the ALS fold-in's (the version's) regularisation
    max_users: int | None = 2000


def holdout_of_items(conf: sp.csr_matrix, hidden: np.ndarray, max_users: int | None = None,
                     seed: int = 0) -> Holdout:
    """Users who have both hidden and visible items: relevant = their hidden items, seen =
    their visible items (with confidences, for fold-in); only hidden items are ranked."""
    conf = sp.csr_matrix(conf)
    conf.sort_indices()
    hidden = np.asarray(hidden, dtype=bool)
    n_users, n_items = conf.shape
    coo = conf.tocoo()
    on_hidden = hidden[coo.col]
    has_hidden = np.bincount(coo.row[on_hidden], minlength=n_users) > 0
    has_seen = np.bincount(coo.row[~on_hidden], minlength=n_users) > 0
    users = np.flatnonzero(has_hidden & has_seen)
    if max_users is not None and len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    sub = conf[users]
    mask_hidden = hidden[sub.indices]
    counts_rel = np.add.reduceat(mask_hidden, sub.indptr[:-1]) if len(users) else \
        np.zeros(0, np.int64)
    counts_seen = np.diff(sub.indptr) - counts_rel
    relevant = UserItems(np.concatenate([[0], np.cumsum(counts_rel)]).astype(np.int64),
                         sub.indices[mask_hidden].astype(np.int64))
    seen = UserItems(np.concatenate([[0], np.cumsum(counts_seen)]).astype(np.int64),
                     sub.indices[~mask_hidden].astype(np.int64))
    return Holdout(cutoff_ms=-1, users=users, relevant=relevant, seen=seen,
                   seen_values=np.asarray(sub.data[~mask_hidden]), allowed=hidden.copy(),
                   n_test_pairs=int(mask_hidden.sum()))


def ndcg(recs: np.ndarray, holdout: Holdout, k: int) -> float:
    return ranking_metrics(recs, holdout.relevant, k, holdout.n_items)[f"ndcg@{k}"]


def hybrid_rank(user_factors: np.ndarray, profiles: np.ndarray, item_factors: np.ndarray,
                embeddings: np.ndarray, blend: float, scale: float, holdout: Holdout,
                k: int) -> np.ndarray:
    """Top-k by the hybrid score (recsys.content), the holdout's exclusions and allowed."""
    users = hybrid_user_vectors(user_factors, profiles, blend, scale)
    return rank_by_factors(users, stacked_items(item_factors, embeddings), k,
                           exclude=holdout.exclude, allowed=holdout.allowed)


def best_blend(user_factors: np.ndarray, profiles: np.ndarray, item_factors: np.ndarray,
               embeddings: np.ndarray, scale: float, holdout: Holdout, k: int,
               grid: Sequence[float] = BLEND_GRID) -> tuple[float, dict[str, float]]:
    """The w of `grid` with the best NDCG@k, kept only when its gain over w = 0 is
    significant over the validation users (paired: mean gain > Z_ONE_SIDED standard errors);
    else 0, the plain collaborative ranking. Also every w's NDCG."""
    per_user = {w: ndcg_per_user(hits(hybrid_rank(user_factors, profiles, item_factors,
                                                   embeddings, w, scale, holdout, k),
                                      holdout.relevant), holdout.relevant.counts, k)
                for w in sorted(set(grid) | {0.0})}
    scores = {f"{w:g}": float(v.mean()) if v.size else 0.0 for w, v in per_user.items()}
    best = max(per_user, key=lambda w: (scores[f"{w:g}"], -w))
    gain = per_user[best] - per_user[0.0]
    if best > 0 and gain.size > 1:
        stderr = float(gain.std(ddof=1)) / np.sqrt(gain.size)
        if not gain.mean() > Z_ONE_SIDED * stderr:
            best = 0.0
    return float(best), scores


def choose_blend(item_factors: np.ndarray, embeddings: np.ndarray, holdout: Holdout,
                 regularization: float, k: int = 10) -> tuple[float, dict[str, float]]:
    """The hybrid weight for a version's personalised lists, on a validation holdout whose
    `seen_values` are confidences (fold-in input) and `item_factors` were fitted without it."""
    if holdout.n_users == 0:
        return 0.0, {}
    users = fold_in_users(holdout, item_factors, regularization)
    profiles = content_profiles((h for h, _ in holdout.histories()), embeddings)
    return best_blend(users, profiles, item_factors, embeddings, factor_scale(item_factors),
                      holdout, k)


def short_histories(holdout: Holdout, n: int, seed: int) -> Holdout:
    """The holdout with each user's training items cut to a seeded random `n` of them: how
    a session or a new user looks (serving blends those with `session_blend`)."""
    rng = np.random.default_rng(seed)
    keep_idx: list[np.ndarray] = []
    counts = []
    for j in range(holdout.n_users):
        lo, hi = holdout.seen.indptr[j], holdout.seen.indptr[j + 1]
        take = np.sort(rng.permutation(np.arange(lo, hi))[:n])
        keep_idx.append(take)
        counts.append(len(take))
    idx = np.concatenate(keep_idx) if keep_idx else np.zeros(0, np.int64)
    seen = UserItems(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
                     holdout.seen.indices[idx])
    return replace(holdout, seen=seen, seen_values=np.asarray(holdout.seen_values)[idx])


@dataclass
class MapTrial:
    kind: str
    lam: float | None
    ndcg: float


def _map_candidates(config: ContentConfig, scale: float) -> list[tuple[str, float | None]]:
    return [("ridge", share * scale) for share in RIDGE_GRID] + [("knn", None)]


def _apply_map(kind: str, lam: float | None, features: sp.csr_matrix, embeddings: np.ndarray,
               factors: np.ndarray, train_rows: np.ndarray, target_rows: np.ndarray,
               neighbours: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(mapped factors of target_rows, ridge weights or None), fitted on train_rows."""
    if kind == "ridge":
        weights = ridge_map(features[train_rows], factors[train_rows], float(lam or 1.0))
        return np.asarray(features[target_rows] @ weights, np.float32), weights
    return knn_map(embeddings[target_rows], embeddings[train_rows], factors[train_rows],
                   neighbours), None


def content_space(items: Sequence[ItemAttributes | None], warm: np.ndarray,
                  config: ContentConfig = ContentConfig()
                  ) -> tuple[FeatureSpace, sp.csr_matrix, np.ndarray, np.ndarray]:
    """(feature space, features, projection, embeddings) of the items of a version: the
    vocabulary from every described item, the projection from the warm ones."""
    described = [i for i in items if i is not None]
    if not described:
        raise ContentError("no item has attributes")
    space = fit_feature_space(described)
    features = space.transform(items)
    warm_rows = np.flatnonzero(np.asarray(warm, dtype=bool) & (np.diff(features.indptr) > 0))
    projection = embedding_projection(features[warm_rows] if len(warm_rows) > 1 else features,
                                      config.embedding_dims, config.seed)
    return space, features, projection, embed(features, projection)


def fit_content(items: Sequence[ItemAttributes | None], item_factors: np.ndarray | None,
                warm: np.ndarray, conf: sp.csr_matrix | None,
                config: ContentConfig = ContentConfig()) -> tuple[ContentModel, np.ndarray]:
    """A content model for the items of a version (one entry per item column; None: no
    attributes) and the embeddings of those items.

    `item_factors` None (a factor-less version): the model serves content similarity only
    (map_kind "none"). `warm` marks the items with interactions (their factors are
    learned); `conf` (users x items confidences of the training data) drives the
    pseudo-cold validation that chooses the map.
    """
    space, features, projection, embeddings = content_space(items, warm, config)
    warm = np.asarray(warm, dtype=bool) & (np.diff(features.indptr) > 0)
    warm_rows = np.flatnonzero(warm)
    record: dict[str, Any] = {"n_features": space.n_features, "n_items": len(items),
                              "n_warm_described": int(len(warm_rows)),
                              "embedding_dims": int(projection.shape[1])}
    if item_factors is None or len(warm_rows) < MIN_WARM_ITEMS or conf is None:
        record["map"] = "none: " + ("factor-less version" if item_factors is None else
                                    f"fewer than {MIN_WARM_ITEMS} warm items with attributes")
        return ContentModel(space, projection, "none", record=record), embeddings
    factors = np.asarray(item_factors, dtype=np.float32)
    scale = factor_scale(factors[warm_rows])
    rng = np.random.default_rng(config.seed)
    hidden_rows = np.sort(rng.choice(warm_rows, max(1, int(round(config.fraction
                                                                   * len(warm_rows)))),
                                     replace=False))
    hidden = np.zeros(len(items), dtype=bool)
    hidden[hidden_rows] = True
    visible_rows = warm_rows[~hidden[warm_rows]]
    holdout = holdout_of_items(conf, hidden, config.max_users, config.seed)
    trials: list[MapTrial] = []
    best: tuple[float, str, float | None] = (-1.0, "ridge", RIDGE_GRID[-1])
    cold_blend, blends = 0.0, {}
    if holdout.n_users:
        known = factors.copy()
        known[hidden_rows] = 0.0  # users are folded in without the hidden items' factors
        users = fold_in_users(holdout, known, config.regularization)
        profiles = content_profiles((h for h, _ in holdout.histories()), embeddings)
        lam_scale = ridge_scale(features[visible_rows])
        best_mapped = None
        for kind, lam in _map_candidates(config, lam_scale):
            mapped, _ = _apply_map(kind, lam, features, embeddings, factors, visible_rows,
                                   hidden_rows, config.knn_neighbours)
            trial_items = known.copy()
            trial_items[hidden_rows] = mapped
            value = ndcg(rank_by_factors(users, trial_items, config.k,
                                         exclude=holdout.exclude, allowed=holdout.allowed),
                         holdout, config.k)
            trials.append(MapTrial(kind, lam, value))
            log.info("content map %s lam=%s: pseudo-cold ndcg@%d %.4f", kind, lam, config.k,
                     value)
            if value > best[0]:
                best, best_mapped = (value, kind, lam), trial_items
        assert best_mapped is not None
        cold_blend, blends = best_blend(users, profiles, best_mapped, embeddings, scale,
                                        holdout, config.k)
    _, kind, lam = best
    _, weights = _apply_map(kind, lam, features, embeddings, factors, warm_rows,
                            warm_rows[:0], config.knn_neighbours)
    record.update({
        "map": kind, "lam": lam, "pseudo_cold_users": int(holdout.n_users),
        "pseudo_cold_items": int(len(hidden_rows)),
        "trials": [{"kind": t.kind, "lam": t.lam, f"ndcg@{config.k}": round(t.ndcg, 5)}
                   for t in trials],
        "cold_blend": cold_blend, "cold_blend_ndcg": blends})
    model = ContentModel(space, projection, kind, weights, config.knn_neighbours,
                         factor_scale=scale, record=record)
    return model, embeddings


def cold_factors(model: ContentModel, items: Sequence[ItemAttributes | None],
                 item_factors: np.ndarray, embeddings: np.ndarray, cold: np.ndarray,
                 warm: np.ndarray) -> np.ndarray:
    """The version's item factors with the `cold` rows replaced by the content map's."""
    out = np.asarray(item_factors, dtype=np.float32).copy()
    rows = np.flatnonzero(cold)
    if len(rows) == 0 or model.map_kind == "none":
        return out
    warm_rows = np.flatnonzero(warm)
    out[rows] = model.map_factors([items[r] for r in rows], embeddings[warm_rows],
                                  out[warm_rows])
    return out


def with_blend(model: ContentModel, blend: float, scores: dict[str, float],
               session_blend: float = 0.0, session_scores: dict[str, float] | None = None
               ) -> ContentModel:
    return replace(model, blend=blend, session_blend=session_blend,
                   record={**model.record, "blend_ndcg": scores, "blend": blend,
                           "session_blend": session_blend,
                           "session_blend_ndcg": session_scores or {}})


__all__ = ["SESSION_ITEMS", "ContentConfig", "best_blend", "choose_blend", "cold_factors",
           "content_space", "fit_content", "short_histories",
           "holdout_of_items", "hybrid_rank", "with_blend"]
