"""Why an item was recommended: each history item's share of an ALS score.

The fold-in (recsys.foldin) gives the user's vector as

    x_u = A^-1 Yu^T Cu 1,    A = YtY + lambda I + Yu^T (Cu - I) Yu

so the score of item i is linear in the user's items j:

    score(i) = y_i^T x_u = sum_j  c_j  y_i^T A^-1 y_j

and `contributions` returns those terms (c_j y_i^T A^-1 y_j, one per history item). For a
vector that *is* this fold-in (exact solver), they sum to the score.

Serving knows the user's vector and items (the seen set) but not their confidences (the
stream keeps them in its table). `implied_confidences` recovers them from the vector: A x = b
is linear in c,

    (YtY + lambda I) x - Yu^T s = Yu^T diag(1 - s) c,    s = Yu x,

k equations in n_u unknowns. With n_u <= k (and Yu^T diag(1 - s) of full column rank) the
solution is unique, so they are the confidences the vector was folded in with; with more
items, the least-squares solution of smallest distance to c = 1 (no extra confidence). Any
solution satisfies A(c) x = Yu^T c, so the contributions built from it still sum to the
score. A vector that is not a fold-in over these items (fitted by the trainer, or a history
that differs from the seen set, or one with negative feedback, whose preference-0 items this
recovery does not know) leaves a residual: `Explanation.residual` says how much.

No I/O and no framework imports here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _system(item_factors: np.ndarray, yty: np.ndarray, regularization: float,
             rows: np.ndarray, confidences: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # A = YtY + lambda I + Yu^T (Cu - I) Yu, in float64; and Yu
    yu = np.asarray(item_factors[rows], dtype=np.float64)
    conf = np.asarray(confidences, dtype=np.float64)
    a = yty + regularization * np.eye(yty.shape[0]) + (yu.T * (np.abs(conf) - 1.0)) @ yu
    return a, yu


def _linear_contributions(item_factors: np.ndarray, yty: np.ndarray, regularization: float,
                          target_rows: np.ndarray, rows: np.ndarray, weight: np.ndarray,
                          preference: np.ndarray) -> np.ndarray:
    # A = YtY + lambda I + Yu^T (W - I) Yu ; contribution_ji = p_j w_j y_i^T A^-1 y_j
    # (history items j down, targets i across: one solve for all targets).
    if not len(rows):
        return np.zeros((0, len(target_rows)), dtype=np.float64)
    yu = np.asarray(item_factors[rows], dtype=np.float64)
    a = yty + regularization * np.eye(yty.shape[0]) + (yu.T * (weight - 1.0)) @ yu
    v = np.linalg.solve(a, np.asarray(item_factors[target_rows], dtype=np.float64).T)
    return (preference * weight)[:, None] * (yu @ v)


def contributions(item_factors: np.ndarray, yty: np.ndarray, regularization: float,
                  target_row: int, rows: np.ndarray, confidences: np.ndarray) -> np.ndarray:
    """c_j y_i^T A^-1 y_j for each history item j (row `rows[j]`), i = `target_row`."""
    rows = np.asarray(rows, dtype=np.intp)
    if not len(rows):
        return np.zeros(0, dtype=np.float64)
    a, yu = _system(item_factors, yty, regularization, rows, confidences)
    # A is symmetric: y_i^T A^-1 y_j = (A^-1 y_i)^T y_j, one solve for all j.
    v = np.linalg.solve(a, np.asarray(item_factors[target_row], dtype=np.float64))
    # A negative confidence (negative feedback, preference 0) contributes nothing to b.
    return np.maximum(np.asarray(confidences, dtype=np.float64), 0.0) * (yu @ v)


def implied_confidences(item_factors: np.ndarray, yty: np.ndarray, regularization: float,
                        rows: np.ndarray, user_vector: np.ndarray,
                        negative: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """The confidences c (one per row) under which `user_vector` is the fold-in over `rows`,
    and the relative residual of A(c) x = b (0 when exact; see the module notes).

    `negative` marks rows of negative feedback (preference 0): their column of the system is
    -s_j y_j instead of (1 - s_j) y_j, and their c comes back negative (recsys.confidence)."""
    rows = np.asarray(rows, dtype=np.intp)
    if not len(rows):
        return np.zeros(0, dtype=np.float64), 0.0
    x = np.asarray(user_vector, dtype=np.float64)
    yu = np.asarray(item_factors[rows], dtype=np.float64)
    s = yu @ x
    pref = np.ones(len(rows)) if negative is None else 1.0 - np.asarray(negative, dtype=float)
    base = yty + regularization * np.eye(yty.shape[0])
    m = yu.T * (pref - s)                      # Yu^T diag(p - s)
    r = base @ x - yu.T @ s
    # |c| = 1 + d, d of least norm: M d = r - M 1
    d, *_ = np.linalg.lstsq(m, r - m.sum(axis=1), rcond=None)
    magnitude = 1.0 + d
    residual = np.linalg.norm(m @ magnitude - r) / max(float(np.linalg.norm(r)), 1e-12)
    return np.where(pref > 0, magnitude, -magnitude), float(residual)


@dataclass(frozen=True)
class Explanation:
    rows: np.ndarray            # history rows, by contribution, largest first
    contributions: np.ndarray   # c_j y_i^T A^-1 y_j, same order
    confidences: np.ndarray     # c_j used, same order
    score: float                # y_i^T x_u
    residual: float             # of the implied confidences (0: x_u is exactly a fold-in)


def explain(item_factors: np.ndarray, yty: np.ndarray, regularization: float,
            target_row: int, rows: np.ndarray, user_vector: np.ndarray,
            negative: np.ndarray | None = None) -> Explanation:
    """Contributions of the user's items to the score of `target_row`, largest first, with
    confidences implied by the vector (the serving side of /because). `negative` marks the
    rows of negative feedback (they contribute 0)."""
    rows = np.asarray(rows, dtype=np.intp)
    conf, residual = implied_confidences(item_factors, yty, regularization, rows, user_vector,
                                         negative)
    # The implied |c| solve the linear system exactly; a least-norm |c| may dip below 0
    # there, so the terms come from that system, not from the sign convention.
    neg = np.zeros(len(rows), dtype=bool) if negative is None else np.asarray(negative, bool)
    magnitude = np.where(neg, -conf, conf)
    parts = _linear_contributions(item_factors, yty, regularization,
                                  np.asarray([target_row]), rows, magnitude,
                                  (~neg).astype(np.float64))[:, 0]
    order = np.argsort(-parts, kind="stable")
    score = float(np.asarray(item_factors[target_row], dtype=np.float64)
                  @ np.asarray(user_vector, dtype=np.float64))
    return Explanation(rows[order], parts[order], conf[order], score, residual)


def top_contributors(item_factors: np.ndarray, yty: np.ndarray, regularization: float,
                     target_rows: np.ndarray, rows: np.ndarray, user_vector: np.ndarray,
                     negative: np.ndarray | None, n: int) -> tuple[np.ndarray, np.ndarray]:
    """`explain` for several targets at once (a recommended list), keeping each target's n
    largest contributions: (rows, contributions), each of shape (len(target_rows), <= n),
    largest first.

    The implied confidences and the system A depend on the user only, so a list of T items
    costs one least-squares fit and one solve with T right-hand sides."""
    rows = np.asarray(rows, dtype=np.intp)
    target_rows = np.asarray(target_rows, dtype=np.intp)
    if not len(rows) or not len(target_rows):
        empty = np.zeros((len(target_rows), 0))
        return empty.astype(np.intp), empty
    conf, _ = implied_confidences(item_factors, yty, regularization, rows, user_vector,
                                  negative)
    neg = np.zeros(len(rows), dtype=bool) if negative is None else np.asarray(negative, bool)
    parts = _linear_contributions(item_factors, yty, regularization, target_rows, rows,
                                  np.where(neg, -conf, conf), (~neg).astype(np.float64))
    order = np.argsort(-parts, axis=0, kind="stable")[:n].T     # (T, n)
    return rows[order], np.take_along_axis(parts.T, order, axis=1)
