"""Item-to-item nearest neighbours (implicit.nearest_neighbours: cosine, BM25, TF-IDF).

implicit keeps the K best neighbours of every item; the model is fitted on the binary
training matrix (serving scores from a binary history too) and published as the top-N
neighbour matrix of recsys.candidates.neighbours.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.candidates.base import KIND_ITEM_ITEM, CandidateSpec, Export, FitContext, binary
from recsys.candidates.neighbours import prune_sparse, rank_holdout, tie_break
from recsys.candidates.popularity import item_popularity
from recsys.candidates.registry import register
from recsys.split import Holdout


@dataclass
class FittedItemItem:
    """Any item-item model once pruned: shared by kNN and EASE."""

    name: str
    rows: np.ndarray  # (n_items, N) int32, -1 padded
    weights: np.ndarray  # (n_items, N) float32
    popularity: np.ndarray
    params: dict[str, Any]
    seconds: float
    kind: str = KIND_ITEM_ITEM

    def rank(self, holdout: Holdout, k: int) -> np.ndarray:
        return rank_holdout(holdout, self.rows, self.weights, tie_break(self.popularity), k)

    def export(self) -> Export:
        return Export(kind=self.kind, item_scores=self.popularity, neighbour_rows=self.rows,
                      neighbour_weights=self.weights,
                      manifest={"neighbours": int(self.rows.shape[1])})


def _implicit_model(method: str, params: Mapping[str, Any], ctx: FitContext):  # noqa: ANN202
    from implicit.nearest_neighbours import BM25Recommender, CosineRecommender, TFIDFRecommender

    k = int(params.get("K", ctx.neighbours))
    threads = ctx.threads
    if method == "bm25":
        return BM25Recommender(K=k, K1=float(params.get("K1", 1.2)),
                               B=float(params.get("B", 0.75)), num_threads=threads)
    if method == "tfidf":
        return TFIDFRecommender(K=k, num_threads=threads)
    return CosineRecommender(K=k, num_threads=threads)


def _fit(method: str, train: sp.csr_matrix, params: Mapping[str, Any],
         ctx: FitContext) -> FittedItemItem:
    started = time.perf_counter()
    model = _implicit_model(method, params, ctx)
    with warnings.catch_warnings():
        # implicit transposes our CSR internally and then warns that it got a COO matrix
        warnings.filterwarnings("ignore", message="Method expects CSR input")
        model.fit(binary(train), show_progress=False)
    rows, weights = prune_sparse(sp.csr_matrix(model.similarity), ctx.neighbours)
    return FittedItemItem(f"knn_{method}", rows, weights, item_popularity(train), dict(params),
                          time.perf_counter() - started)


def _register(method: str, defaults: dict[str, Any], space: dict[str, tuple[Any, ...]],
              description: str) -> None:
    register(CandidateSpec(
        name=f"knn_{method}", kind=KIND_ITEM_ITEM, defaults=defaults, space=space,
        fit=lambda train, params, ctx: _fit(method, train, params, ctx),
        description=description))


_register("cosine", {"K": 100}, {"K": (20, 50, 100, 200)},
          "item-item cosine neighbours (implicit)")
_register("bm25", {"K": 100, "K1": 1.2, "B": 0.75},
          {"K": (20, 50, 100, 200), "K1": (0.5, 1.2, 2.0), "B": (0.25, 0.5, 0.75, 1.0)},
          "item-item BM25-weighted neighbours (implicit)")
_register("tfidf", {"K": 100}, {"K": (20, 50, 100, 200)},
          "item-item TF-IDF-weighted neighbours (implicit)")
