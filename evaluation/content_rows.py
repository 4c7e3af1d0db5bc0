"""The rows of `recsys evaluate --items SPEC` that use item attributes (recsys.content).

* cold-items protocol (only items without interactions are ranked):
    random            a seeded random order of the cold items (the floor)
    content           w = 1: cosine of the item's content embedding to the user's profile
                      (the sum of the embeddings of their training items)
    content map (ridge), content map (knn)
                      ALS scores x_u . y_i with the cold items' factors mapped from their
                      attributes (ridge at the lam chosen on pseudo-cold validation; knn)
    hybrid            the map chosen on pseudo-cold validation, blended with content at the
                      weight chosen there (recsys.content_fit.fit_content), as served for new
                      items
  Everything is fitted on the training part only: ALS on the warm items' events, the map and
  the weights on warm items hidden from it.

* time / stratified protocols:
    hybrid            the ALS row's factors, each test user's score blended with content
                      affinity at the weight chosen on validation carved from the training
                      part (time: its newest events; stratified: per-user random) with an ALS
                      fitted on the rest of it; weight 0 (plain ALS) when content does not help
    ALS (5 items), hybrid (5 items)
                      the same test users with only a seeded random 5 of their training items
                      (a session, a new user): plain, and blended at the weight chosen on the
                      validation users cut alike (what serving does for short histories)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from evaluation.protocols import Split
from recsys.als import AlsParams, fit_als
from recsys.candidates.als_model import confidences
from recsys.confidence import confidence
from recsys.content import content_profiles, factor_scale
from recsys.content_fit import (
    SESSION_ITEMS,
    ContentConfig,
    choose_blend,
    cold_factors,
    content_space,
    fit_content,
    hybrid_rank,
    short_histories,
)
from recsys.holdout_eval import fold_in_users
from recsys.item_attributes import ItemAttributes
from recsys.matrix import IndexedEvents
from recsys.selection import carve_validation

log = logging.getLogger(__name__)


def attributes_by_column(events: IndexedEvents, items: Mapping[str, ItemAttributes]
                         ) -> list[ItemAttributes | None]:
    return [items.get(str(item_id)) for item_id in events.item_ids]


def random_ranking(split: Split, k: int, seed: int) -> np.ndarray:
    h = split.holdout
    rng = np.random.default_rng(seed)
    allowed = np.flatnonzero(h.allowed)
    out = np.full((h.n_users, k), -1, dtype=np.int64)
    for row in range(h.n_users):
        out[row, :min(k, len(allowed))] = rng.permutation(allowed)[:k]
    return out


def cold_item_rows(split: Split, events: IndexedEvents, params: AlsParams, k: int,
                   items: Mapping[str, ItemAttributes], seed: int, score: Any
                   ) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """The cold-items table ({row: metrics}) and the content model's record."""
    h = split.holdout
    table: dict[str, dict[str, float]] = {}
    table["random"] = {**score(random_ranking(split, k, seed), split, k, ci=True),
                       "seconds": 0.0}
    started = time.perf_counter()
    attrs = attributes_by_column(events, items)
    warm = np.bincount(split.conf_train.indices, minlength=len(attrs)) > 0
    factors = fit_als(split.conf_train, params)
    config = ContentConfig(k=k, seed=seed, regularization=params.regularization)
    model, embeddings = fit_content(attrs, factors.item_factors, warm, split.conf_train, config)
    users = fold_in_users(h, factors.item_factors, params.regularization)
    profiles = content_profiles((seen for seen, _ in h.histories()), embeddings)
    fit_s = time.perf_counter() - started
    table["content"] = {**score(hybrid_rank(users, profiles, factors.item_factors, embeddings,
                                            1.0, 1.0, h, k), split, k, ci=True),
                        "seconds": fit_s}
    chosen = cold_factors(model, attrs, factors.item_factors, embeddings, ~warm, warm)
    for kind in ("ridge", "knn"):
        lam = max((t for t in model.record["trials"] if t["kind"] == "ridge"),
                  key=lambda t: t[f"ndcg@{k}"])["lam"]
        variant = model if kind == model.map_kind else _refit_map(model, kind, lam, attrs,
                                                                 factors.item_factors, warm)
        mapped = cold_factors(variant, attrs, factors.item_factors, embeddings, ~warm, warm)
        table[f"content map ({kind})"] = {
            **score(hybrid_rank(users, profiles, mapped, embeddings, 0.0, model.factor_scale,
                                h, k), split, k, ci=True), "seconds": fit_s}
    blend = float(model.record["cold_blend"])
    table["hybrid"] = {**score(hybrid_rank(users, profiles, chosen, embeddings, blend,
                                           model.factor_scale, h, k), split, k, ci=True),
                       "blend": blend, "seconds": time.perf_counter() - started}
    return table, {key: value for key, value in model.record.items()}


def _refit_map(model: Any, kind: str, lam: float | None, attrs: list[ItemAttributes | None],
               item_factors: np.ndarray, warm: np.ndarray) -> Any:
    from recsys.content import ridge_map

    if kind == "knn":
        return replace(model, map_kind="knn", weights=None)
    features = model.features(attrs)
    rows = np.flatnonzero(warm & (np.diff(features.indptr) > 0))
    return replace(model, map_kind="ridge",
                   weights=ridge_map(features[rows], item_factors[rows], float(lam)))


def hybrid_rows(split: Split, events: IndexedEvents, params: AlsParams, k: int,
                items: Mapping[str, ItemAttributes], item_factors: np.ndarray, seed: int,
                score: Any) -> dict[str, dict[str, float]]:
    """The `hybrid` row of a time/stratified split, on the ALS row's `item_factors`, and the
    short-history pair: `ALS (5 items)` and `hybrid (5 items)`, every test user cut to a
    seeded random SESSION_ITEMS of their training items (how a session or a new user
    looks), the weight chosen on the validation users cut alike (`session_blend`)."""
    started = time.perf_counter()
    h = split.holdout
    attrs = attributes_by_column(events, items)
    how = "time" if split.holdout.cutoff_ms >= 0 else "random"
    fit_part, valid = carve_validation(events, split.train_mask, how, 0.2, 2000, seed)
    valid = replace(valid, seen_values=np.asarray(
        confidence(np.asarray(valid.seen_values, np.float64), params.alpha), np.float32))
    warm = np.bincount(split.conf_train.indices, minlength=len(attrs)) > 0
    _, _, _, embeddings = content_space(attrs, warm, ContentConfig(seed=seed))
    valid_factors = fit_als(confidences(fit_part, params.alpha), params)
    blend, scores = choose_blend(valid_factors.item_factors, embeddings, valid,
                                 params.regularization, k)
    session, session_scores = choose_blend(
        valid_factors.item_factors, embeddings, short_histories(valid, SESSION_ITEMS, seed),
        params.regularization, k)
    log.info("hybrid blend on %s validation: %s -> %g; short histories: %s -> %g", how,
             scores, blend, session_scores, session)
    scale = factor_scale(item_factors)
    rows: dict[str, dict[str, float]] = {}
    short = short_histories(h, SESSION_ITEMS, seed)
    for name, holdout, weight in (("hybrid", h, blend),
                                  (f"ALS ({SESSION_ITEMS} items)", short, 0.0),
                                  (f"hybrid ({SESSION_ITEMS} items)", short, session)):
        users = fold_in_users(holdout, item_factors, params.regularization)
        profiles = content_profiles((seen for seen, _ in holdout.histories()), embeddings)
        recs = hybrid_rank(users, profiles, item_factors, embeddings, weight, scale, holdout,
                           k)
        rows[name] = {**score(recs, replace(split, holdout=holdout), k, ci=True),
                      "blend": weight, "seconds": time.perf_counter() - started}
    return rows
