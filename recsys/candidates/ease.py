"""EASE (Steck 2019): a closed-form item-item linear model, bounded by the item count.

    G = X^T X + lambda I          X: users x items, binary
    P = G^-1
    B = I - P diag(1 / diag(P))   i.e. B_ij = -P_ij / P_jj, B_ii = 0
    score(u) = x_u B

An n x n float64 inverse: memory 8 n^2 bytes and O(n^3) time, so it is fitted only up to
`FitContext.max_items` items (setting `trainer_ease_max_items`) and skipped above. Published
as the top-N weights (by magnitude) of each row of B (recsys.candidates.neighbours); ranking offline
uses the same pruned matrix that serving holds.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from recsys.candidates.base import KIND_ITEM_ITEM, CandidateSpec, FitContext, binary
from recsys.candidates.knn import FittedItemItem
from recsys.candidates.neighbours import prune_dense
from recsys.candidates.popularity import item_popularity
from recsys.candidates.registry import register

DEFAULTS = {"lambda": 500.0}
SPACE = {"lambda": (50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0)}


def ease_weights(x: sp.csr_matrix, lam: float) -> np.ndarray:
    gram = np.asarray((x.T @ x).toarray(), dtype=np.float64)
    gram[np.diag_indices_from(gram)] += lam
    # G is symmetric positive definite (lambda > 0): a Cholesky inverse
    p = scipy.linalg.cho_solve(scipy.linalg.cho_factor(gram, overwrite_a=True),
                               np.eye(len(gram)), overwrite_b=True)
    b = -p / np.diag(p)[None, :]
    b[np.diag_indices_from(b)] = 0.0
    return b


def skip(shape: tuple[int, int], ctx: FitContext) -> str | None:
    if shape[1] > ctx.max_items:
        return f"{shape[1]} items > trainer_ease_max_items {ctx.max_items}"
    return None


def fit(train: sp.csr_matrix, params: Mapping[str, Any], ctx: FitContext) -> FittedItemItem:
    started = time.perf_counter()
    lam = float({**DEFAULTS, **params}["lambda"])
    if lam <= 0:
        raise ValueError("EASE lambda must be > 0")
    reason = skip(train.shape, ctx)
    if reason:
        raise ValueError(f"EASE not applicable: {reason}")
    with threadpool_limits(limits=ctx.threads or None, user_api="blas"):
        weights = ease_weights(binary(train), lam)
    rows, w = prune_dense(weights, ctx.neighbours)
    return FittedItemItem("ease", rows, w, item_popularity(train), {"lambda": lam},
                          time.perf_counter() - started)


register(CandidateSpec(name="ease", kind=KIND_ITEM_ITEM, fit=fit, defaults=DEFAULTS,
                       space=SPACE, skip=skip,
                       description="closed-form item-item linear model (EASE), bounded items"))
