"""A stored (published) version as a candidate again, laid out in another item index: the
trainer scores the model in service on its new holdout with this."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from recsys.als import AlsParams, Factors
from recsys.candidates.als_model import FittedAls
from recsys.candidates.base import KIND_ALS, KIND_ITEM_ITEM, KIND_POPULARITY, Fitted
from recsys.candidates.knn import FittedItemItem
from recsys.candidates.popularity import FittedPopularity


def column_map(item_ids: np.ndarray, target_ids: np.ndarray) -> np.ndarray:
    """For each stored row, its column in `target_ids` (-1 when the item is gone)."""
    return pd.Index(np.asarray(target_ids, dtype=object)).get_indexer(
        np.asarray(item_ids, dtype=object)).astype(np.int64)


def model_kind(manifest: Mapping[str, Any]) -> str:
    """A version's kind; versions from before candidates were ALS."""
    return str(manifest.get("model_kind") or KIND_ALS)


def from_arrays(manifest: Mapping[str, Any], arrays: Mapping[str, np.ndarray],
                target_ids: np.ndarray) -> tuple[Fitted, np.ndarray]:
    """(the stored model over the columns of `target_ids`, bool mask of columns it knows)."""
    ids = np.asarray(arrays["item_ids"]).astype(str)
    target = np.asarray(target_ids).astype(str)
    cols = column_map(ids, target)
    present = cols >= 0
    known = np.zeros(len(target), dtype=bool)
    known[cols[present]] = True
    scores = np.zeros(len(target), dtype=np.float64)
    stored_scores = arrays.get("item_scores")
    if stored_scores is not None and len(stored_scores) == len(ids):
        scores[cols[present]] = np.asarray(stored_scores, np.float64)[present]
    kind = model_kind(manifest)
    name = str(manifest.get("candidate") or kind)
    if kind == KIND_POPULARITY:
        return FittedPopularity(scores, name=name), known
    if kind == KIND_ITEM_ITEM:
        rows = np.asarray(arrays["neighbour_rows"], dtype=np.int64)
        weights = np.asarray(arrays["neighbour_weights"], dtype=np.float32)
        mapped = np.where(rows >= 0, cols[np.maximum(rows, 0)], -1)
        out_rows = np.full((len(target), rows.shape[1]), -1, dtype=np.int32)
        out_w = np.zeros((len(target), rows.shape[1]), dtype=np.float32)
        out_rows[cols[present]] = mapped[present]
        out_w[cols[present]] = np.where(mapped[present] >= 0, weights[present], 0.0)
        return FittedItemItem(name, out_rows, out_w, scores, {}, 0.0), known
    factors = np.asarray(arrays["item_factors"], dtype=np.float32)
    aligned = np.zeros((len(target), factors.shape[1]), dtype=np.float32)
    aligned[cols[present]] = factors[present]
    als = AlsParams(factors=factors.shape[1], regularization=float(manifest["regularization"]),
                    iterations=int(manifest.get("iterations", 1)),
                    alpha=float(manifest.get("alpha", 1.0)))
    return FittedAls(als, Factors(np.zeros((0, factors.shape[1]), np.float32), aligned),
                     scores, {}, name=name), known
