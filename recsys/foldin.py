"""ALS fold-in: the user half-step of implicit-feedback ALS, against fixed item factors.

This is the one implementation of the maths that the stream worker, the serving layer
(anonymous sessions) and the replay evaluation share. It must agree with implicit's
`AlternatingLeastSquares.recalculate_user` (exact solver) on the same item factors and
confidences: tests/recsys/test_foldin.py holds it to a relative error below 1e-4.

Hu, Koren & Volinsky (2008): with item factors Y (n x k), a user's confidences c_i over the
items they touched (c = 1 + alpha * weighted count, preference p_i = 1) and regularisation
lambda, the user's vector is

    x_u = (YtY + lambda I + Yu^T (Cu - I) Yu)^-1  Yu^T Cu p_u

where Yu holds the rows of the items the user touched. YtY depends only on the model, so it
is computed once per model version (see `gram`) and each fold-in costs O(n_u k^2 + k^3).

No I/O and no framework imports here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

UserHistory = tuple[np.ndarray, np.ndarray]  # (item row indices, confidences)


def gram(item_factors: np.ndarray) -> np.ndarray:
    """YtY in float64; cache it per model version."""
    factors = np.asarray(item_factors, dtype=np.float64)
    return factors.T @ factors


def _normal_equations(
    item_factors: np.ndarray,
    yty: np.ndarray,
    regularization: float,
    item_indices: np.ndarray,
    confidences: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    # A = YtY + lambda I + Yu^T (Cu - I) Yu ;  b = Yu^T Cu 1
    rows = np.asarray(item_factors[item_indices], dtype=np.float64)
    conf = np.asarray(confidences, dtype=np.float64)
    a = yty + regularization * np.eye(yty.shape[0]) + (rows.T * (conf - 1.0)) @ rows
    b = rows.T @ conf
    return a, b


def fold_in(
    item_factors: np.ndarray,
    yty: np.ndarray,
    regularization: float,
    item_indices: np.ndarray,
    confidences: np.ndarray,
) -> np.ndarray:
    """One user's vector (float32, length k). An empty history gives the zero vector."""
    k = item_factors.shape[1]
    if len(item_indices) == 0:
        return np.zeros(k, dtype=np.float32)
    a, b = _normal_equations(item_factors, yty, regularization, item_indices, confidences)
    return np.linalg.solve(a, b).astype(np.float32)


def fold_in_batch(
    item_factors: np.ndarray,
    yty: np.ndarray,
    regularization: float,
    histories: Sequence[UserHistory],
) -> np.ndarray:
    """Many users at once: one stacked LAPACK solve instead of a Python loop of solves.

    Returns a float32 array of shape (len(histories), k); row j belongs to histories[j].
    """
    k = item_factors.shape[1]
    out = np.zeros((len(histories), k), dtype=np.float32)
    if not histories:
        return out
    a = np.empty((len(histories), k, k), dtype=np.float64)
    b = np.empty((len(histories), k), dtype=np.float64)
    base = yty + regularization * np.eye(k)
    nonempty = np.zeros(len(histories), dtype=bool)
    for j, (indices, confidences) in enumerate(histories):
        if len(indices) == 0:
            a[j] = base  # solvable placeholder; its result is replaced by zeros below
            b[j] = 0.0
            continue
        nonempty[j] = True
        a[j], b[j] = _normal_equations(item_factors, yty, regularization, indices, confidences)
    solved = np.linalg.solve(a, b[..., None])[..., 0]
    out[nonempty] = solved[nonempty].astype(np.float32)
    return out


def score_items(user_vector: np.ndarray, item_factors: np.ndarray) -> np.ndarray:
    """Predicted preference of the user for every item: Y x_u."""
    return item_factors @ user_vector.astype(item_factors.dtype, copy=False)


def top_k(scores: np.ndarray, k: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """Indices of the k highest finite scores, best first, by partial sort (O(n + k log k)).

    `exclude` holds row indices that must not appear (items already seen, filtered out).
    The input is never modified.
    """
    scores = np.asarray(scores)
    if scores.dtype.kind != "f":
        scores = scores.astype(np.float64)
    if exclude is not None and len(exclude):
        scores = scores.copy()
        scores[exclude] = -np.inf
    n = len(scores)
    k = min(k, n)
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    # Fast path, in the scores' own dtype (no float64 copy, no pass over every item): the k
    # largest, then check only those k. A non-finite one among them means fewer than k
    # usable scores (excluded rows) or inf/NaN in the input: redo it on the finite ones.
    part = np.argpartition(scores, n - k)[n - k:]
    best = part[np.argsort(-scores[part], kind="stable")]
    if np.isfinite(scores[best]).all():
        return best
    finite = np.flatnonzero(np.isfinite(scores))
    if not len(finite):
        return np.empty(0, dtype=np.int64)
    return finite[top_k(scores[finite], k)]
