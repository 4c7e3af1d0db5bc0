"""The item-item serving form: a top-N neighbour matrix per item, and scoring from it.

    W[i]      = the N entries of row i of a similarity (kNN) or weight (EASE) matrix that are
                largest in magnitude (EASE's negative weights are evidence too), the
                diagonal left out, stored as (columns int32, weights float32), -1 padded
    score(j)  = sum over the user's items i of W[i, j]                 (binary history)

One implementation for offline ranking (`rank_holdout`) and for serving (`score_items`),
so what the trainer measured is what serving computes. The history is binary because
serving reads it from the user's seen set (item -> last time), which holds no weights.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recsys.split import Holdout
from recsys.topk import rank, top_k_rows

_ROWS_PER_BLOCK = 2048


def prune_dense(weights: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The n largest-magnitude columns of every row of a dense (items x items) matrix,
    diagonal excluded, with their signed weights."""
    m = weights.shape[0]
    n = max(1, min(n, m - 1)) if m > 1 else 1
    rows_out = np.full((m, n), -1, dtype=np.int32)
    w_out = np.zeros((m, n), dtype=np.float32)
    for start in range(0, m, _ROWS_PER_BLOCK):
        stop = min(m, start + _ROWS_PER_BLOCK)
        block = np.array(weights[start:stop], dtype=np.float32)
        magnitude = np.abs(block)
        magnitude[np.arange(stop - start), np.arange(start, stop)] = -np.inf
        magnitude[magnitude == 0] = -np.inf
        idx = top_k_rows(magnitude, n)
        rows_out[start:stop] = idx
        w_out[start:stop] = np.where(idx >= 0, np.take_along_axis(block, np.maximum(idx, 0),
                                                                  axis=1), 0.0)
    return rows_out, w_out


def prune_sparse(similarity: sp.csr_matrix, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-n columns of every row of a sparse (items x items) matrix, diagonal excluded."""
    sim = sp.csr_matrix(similarity, dtype=np.float32)
    sim.setdiag(0.0)
    sim.eliminate_zeros()
    m = sim.shape[0]
    width = max(1, min(n, int(np.diff(sim.indptr).max(initial=0)) or 1))
    rows_out = np.full((m, width), -1, dtype=np.int32)
    w_out = np.zeros((m, width), dtype=np.float32)
    for i in range(m):
        lo, hi = sim.indptr[i], sim.indptr[i + 1]
        if lo == hi:
            continue
        cols, vals = sim.indices[lo:hi], sim.data[lo:hi]
        keep = vals > 0
        cols, vals = cols[keep], vals[keep]
        order = np.argsort(-vals, kind="stable")[:width]
        rows_out[i, :len(order)] = cols[order]
        w_out[i, :len(order)] = vals[order]
    return rows_out, w_out


def to_sparse(rows: np.ndarray, weights: np.ndarray, n_items: int) -> sp.csr_matrix:
    """The padded neighbour arrays as a CSR (items x items) matrix."""
    valid = rows >= 0
    src = np.repeat(np.arange(rows.shape[0]), valid.sum(axis=1))
    return sp.csr_matrix((weights[valid].astype(np.float32), (src, rows[valid].astype(np.int64))),
                         shape=(rows.shape[0], n_items))


# Items no neighbour list reaches score 0; popularity orders them (a share of the smallest
# float32 step at 1.0, so it never reorders items that have evidence).
TIE_BREAK = 1e-9


def tie_break(item_scores: np.ndarray) -> np.ndarray:
    """Popularity scaled into [0, TIE_BREAK): added to every item-item score."""
    scores = np.asarray(item_scores, dtype=np.float64)
    top = scores.max(initial=0.0)
    return (scores / top * TIE_BREAK if top > 0 else np.zeros_like(scores)).astype(np.float32)


def score_items(history: np.ndarray, rows: np.ndarray, weights: np.ndarray,
                bias: np.ndarray) -> np.ndarray:
    """score(j) = sum_i W[i, j] over the history's item rows i (one bincount of their
    neighbour lists) + bias(j) (`tie_break` of popularity). Float32, a fresh array."""
    hist = np.asarray(history, dtype=np.intp)
    n_items = len(bias)
    if not len(hist):
        return bias.copy()
    cols = rows[hist].ravel()
    vals = weights[hist].ravel()
    valid = cols >= 0
    scores = np.bincount(cols[valid], weights=vals[valid], minlength=n_items)
    return (scores + bias).astype(np.float32)


def rank_holdout(holdout: Holdout, rows: np.ndarray, weights: np.ndarray, bias: np.ndarray,
                 k: int) -> np.ndarray:
    n_items = len(holdout.allowed)
    matrix = to_sparse(rows, weights, n_items)
    seen = sp.csr_matrix((np.ones(len(holdout.seen.indices), dtype=np.float32),
                          holdout.seen.indices, holdout.seen.indptr),
                         shape=(holdout.n_users, n_items))
    return rank(lambda a, b: (seen[a:b] @ matrix).toarray() + bias, holdout.n_users, n_items, k,
                exclude=holdout.exclude, allowed=holdout.allowed)
