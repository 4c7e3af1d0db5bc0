"""The trainer's content step: read the catalogue's item attributes from Redis, fit the content
model on the version's items (recsys.content_fit), choose the hybrid blend weight on
validation carved from the training part, and hand back the blob and the manifest record.

    attributes  = the catalogue hash of every item of the history (read_catalogue_attributes)
    model, E    = fit_content(attributes, item factors of the version, warm = its items)
                  ALS versions: feature -> factor map chosen on pseudo-cold validation;
                  factor-less versions (item_item, popularity): embeddings only (content
                  similarity for new items and new users)
    blend       = choose_blend on the selection's validation carve (the newest
                  `trainer_validation_fraction` of the training events) with the winner
                  refitted on the rest: never the gate's holdout
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.candidates import Fitted
from recsys.candidates.als_model import confidences
from recsys.confidence import confidence
from recsys.content import CONTENT_FORMAT, ContentError, pack_content
from recsys.content_catalogue import attributes_from_hash, has_features
from recsys.content_fit import (
    SESSION_ITEMS,
    ContentConfig,
    choose_blend,
    fit_content,
    short_histories,
    with_blend,
)
from recsys.item_attributes import ItemAttributes
from recsys.keys import Keys
from recsys.matrix import IndexedEvents
from recsys.selection import carve_validation, config_from_settings, fit_on
from recsys.settings import Settings

log = logging.getLogger(__name__)

READ_BATCH = 1_000


def read_catalogue_attributes(redis: Any, keys: Keys, item_ids: Sequence[str]
                              ) -> list[ItemAttributes | None]:
    """The attributes of each item (None: not in the catalogue), pipelined in batches."""
    out: list[ItemAttributes | None] = []
    ids = [str(i) for i in item_ids]
    for start in range(0, len(ids), READ_BATCH):
        chunk = ids[start:start + READ_BATCH]
        pipe = redis.pipeline(transaction=False)
        for item in chunk:
            pipe.hgetall(keys.item(item))
        out += [attributes_from_hash(item, raw) for item, raw in zip(chunk, pipe.execute(),
                                                                strict=True)]
    return out


def fit_version_content(settings: Settings, redis: Any, keys: Keys, events: IndexedEvents,
                        train: np.ndarray, candidate: Fitted, final: Fitted,
                        matrix: sp.csr_matrix, item_mask: np.ndarray
                        ) -> tuple[bytes | None, dict[str, Any]]:
    """(content blob for the version's items or None, the manifest's `content` record)."""
    started = time.perf_counter()
    attributes = read_catalogue_attributes(redis, keys, np.asarray(events.item_ids).tolist())
    described = int(sum(has_features(a) for a in np.asarray(attributes, dtype=object)[
        item_mask]))
    if described == 0:
        return None, {"fitted": False, "reason": "no item of the version has attributes in "
                      "the catalogue"}
    export = final.export()
    factors = export.item_factors if export.item_factors is not None and \
        export.item_factors.shape[1] > 0 else None
    k = int(settings.trainer_gate_metric.partition("@")[2])
    regularization = float(export.manifest.get("regularization", settings.als_regularization))
    alpha = float(export.manifest.get("alpha", settings.alpha))
    config = ContentConfig(k=k, seed=settings.random_seed,
                           embedding_dims=settings.trainer_content_dims,
                           regularization=regularization,
                           max_users=settings.trainer_eval_max_users)
    conf = confidences(matrix, alpha) if factors is not None else None
    try:
        model, embeddings = fit_content(attributes, factors, item_mask, conf, config)
    except ContentError as exc:
        log.warning("content model not fitted: %s", exc)
        return None, {"fitted": False, "reason": str(exc)}
    if factors is not None:
        model = _with_validated_blend(settings, events, train, candidate, model, embeddings,
                                      alpha, regularization, k)
    record = {"fitted": True, "format": CONTENT_FORMAT, "map": model.map_kind,
              "blend": model.blend, "session_blend": model.session_blend,
              "cold_blend": model.record.get("cold_blend", 0.0),
              "described_items": described, "seconds": round(time.perf_counter() - started, 3),
              **{key: value for key, value in model.record.items()
                 if key not in ("map", "blend", "session_blend", "cold_blend")}}
    log.info("content model: %s map, blend %g, %d described items, %.1fs", model.map_kind,
             model.blend, described, record["seconds"])
    return pack_content(model, embeddings[item_mask]), record


def _with_validated_blend(settings: Settings, events: IndexedEvents, train: np.ndarray,
                          candidate: Fitted, model: Any, embeddings: np.ndarray, alpha: float,
                          regularization: float, k: int) -> Any:
    """The blend weight on the selection's validation carve, the winner refitted on the
    carve's fit part (so the validation users' items are not in its factors)."""
    sel = config_from_settings(settings)
    fit_part, valid = carve_validation(events, train, "time", sel.validation_fraction,
                                       sel.max_users, sel.seed)
    if valid.n_users == 0:
        return with_blend(model, 0.0, {})
    valid = replace(valid, seen_values=np.asarray(
        confidence(np.asarray(valid.seen_values, np.float64), alpha), np.float32))
    refit = fit_on(candidate.name, fit_part, candidate.params, sel).export()
    if refit.item_factors is None:
        return with_blend(model, 0.0, {})
    blend, scores = choose_blend(refit.item_factors, embeddings, valid, regularization, k)
    # sessions and new users: the same users with a few of their items
    session, session_scores = choose_blend(
        refit.item_factors, embeddings, short_histories(valid, SESSION_ITEMS, sel.seed),
        regularization, k)
    return with_blend(model, blend, scores, session, session_scores)
