"""ALS fold-in: the user half-step of implicit-feedback ALS, against fixed item factors.

This is the one implementation of the maths that the stream worker, the serving layer
(anonymous sessions) and the replay evaluation share. It must agree with implicit's
`AlternatingLeastSquares.recalculate_user` (exact solver) on the same item factors and
confidences: tests/recsys/test_foldin.py holds it to a relative error below 1e-4.

Hu, Koren & Volinsky (2008): with item factors Y (n x k), a user's confidences c_i over the
items they touched (c = 1 + alpha * weighted count, preference p_i = 1) and regularisation
lambda, the user's vector is

    x_u = (YtY + lambda I + Yu^T (Cu - I) Yu)^-1  Yu^T Cu p_u

where Yu holds the rows of the items the user touched. Negative feedback arrives as a
negative confidence (recsys.confidence, implicit's convention): that item has preference 0
and confidence |c|, so it adds (|c| - 1) y yt to A and nothing to b. YtY depends only on the
model, so it is computed once per model version (see `gram`) and each fold-in costs
O(n_u k^2 + k^3).

The item half-step is the same problem with the roles swapped (`fold_in_items`): with user
factors X (m x k), an item's confidences c_u over the users who touched it and the same
confidence rule,

    y_i = (XtX + lambda I + Xi^T (Ci - I) Xi)^-1  Xi^T Ci p_i

which is implicit's `recalculate_item`. The stream worker uses it for items the served
version does not know (docs/stream.md, "Item fold-in"); XtX is the Gram matrix of the
version's user factors, published with the version.

No I/O and no framework imports here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

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
    # A = YtY + lambda I + Yu^T (|Cu| - I) Yu ;  b = Yu^T Cu p_u  (p = 1 where c > 0, else 0)
    rows = np.asarray(item_factors[item_indices], dtype=np.float64)
    conf = np.asarray(confidences, dtype=np.float64)
    a = yty + regularization * np.eye(yty.shape[0]) + (rows.T * (np.abs(conf) - 1.0)) @ rows
    b = rows.T @ np.maximum(conf, 0.0)
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


# Histories up to this many items are solved through the L x L capacitance system (Woodbury,
# O(L k^2 + L^3) per user); longer ones through the k x k normal equations (O(L k^2 + k^3)).
# Users of one length class are padded to a common length and solved in one stacked call.
WOODBURY_MAX_ITEMS = 32
# Length classes: exact up to 8 items (the common case: a few events per user), then rounded up
# to a multiple of 8 (padding costs flops in proportion); a padded row contributes nothing.
_EXACT_UP_TO = 8


def _length_classes(lengths: np.ndarray) -> np.ndarray:
    rounded = -(-lengths // _EXACT_UP_TO) * _EXACT_UP_TO
    return np.where(lengths <= _EXACT_UP_TO, lengths, rounded)


def _solve_woodbury(yu: np.ndarray, conf: np.ndarray, weight: np.ndarray, inverse: np.ndarray
                    ) -> np.ndarray:
    # With B = YtY + lambda I (G = B^-1 shared by all users), D = diag(c - 1) and b = Yu^T c:
    #   (B + Yu^T D Yu)^-1 = G - G Yu^T (I + D Yu G Yu^T)^-1 D Yu G      (Woodbury)
    #   x = g - P^T z,  g = G b,  P = Yu G,  z = (I + D Yu P^T)^-1 D Yu g
    # Only an L x L system per user. A padded slot has c = 0 and d = 0: its row of the
    # system is the identity's, its z is 0, and it adds nothing to b.
    # (Stacked matmuls throughout: einsum without a BLAS path is several times slower.)
    m, width, k = yu.shape
    d = weight
    p = (yu.reshape(m * width, k) @ inverse).reshape(m, width, k)  # one GEMM for all users
    g = (conf[:, None, :] @ yu)[:, 0, :] @ inverse         # G b   (G symmetric)
    s = d[:, :, None] * (p @ yu.transpose(0, 2, 1))        # D Yu G Yu^T
    s += np.eye(yu.shape[1])
    rhs = d * (yu @ g[:, :, None])[:, :, 0]                # D Yu g
    z = np.linalg.solve(s, rhs[..., None])                 # (m, L, 1)
    return g - (p.transpose(0, 2, 1) @ z)[:, :, 0]


def _solve_normal(yu: np.ndarray, conf: np.ndarray, weight: np.ndarray, base: np.ndarray
                  ) -> np.ndarray:
    # A = YtY + lambda I + Yu^T (Cu - I) Yu ;  b = Yu^T Cu 1
    # Yu^T (Cu - I) Yu is the O(L k^2) bulk of a long history: accumulated in float32, the
    # factors' own precision (implicit computes its solves in float32 too), faster than
    # float64 (docs/benchmarks.md) and within rounding of it (tests hold it to implicit);
    # the k x k solve stays in float64.
    yu32 = yu.astype(np.float32, copy=False)
    a = base + (yu32.transpose(0, 2, 1) * weight[:, None, :].astype(np.float32)) @ yu32
    b = yu.transpose(0, 2, 1) @ conf[:, :, None]
    return np.linalg.solve(a, b)[..., 0]


def fold_in_batch(
    item_factors: np.ndarray,
    yty: np.ndarray,
    regularization: float,
    histories: Sequence[UserHistory],
) -> np.ndarray:
    """Many users at once, without a Python loop of linear algebra: users are grouped by
    history length and each group is solved in one stacked call (see WOODBURY_MAX_ITEMS).
    Same result as `fold_in` per user, up to float64 rounding.

    Returns a float32 array of shape (len(histories), k); row j belongs to histories[j]; an
    empty history gives the zero vector.
    """
    k = item_factors.shape[1]
    out = np.zeros((len(histories), k), dtype=np.float32)
    lengths = np.fromiter((len(indices) for indices, _ in histories), dtype=np.int64,
                          count=len(histories))
    if not lengths.any():
        return out
    # All histories end to end; user j's items are flat[starts[j] : starts[j] + lengths[j]].
    flat_rows = np.concatenate([np.asarray(indices, dtype=np.int64) for indices, _ in histories])
    flat_conf = np.concatenate([np.asarray(conf, dtype=np.float64) for _, conf in histories])
    starts = np.cumsum(lengths) - lengths
    classes = _length_classes(lengths)
    base = yty + regularization * np.eye(k)
    inverse: np.ndarray | None = None
    for width in np.unique(classes[lengths > 0]).tolist():
        members = np.flatnonzero((classes == width) & (lengths > 0))
        # Pad to `width`: a padded slot takes row 0 at c = 0 and weight c - 1 = 0, so it
        # adds nothing to A or b.
        slot = np.arange(width)
        valid = slot[None, :] < lengths[members][:, None]
        pos = np.where(valid, starts[members][:, None] + slot[None, :], 0)
        rows = np.where(valid, flat_rows[pos], 0)
        conf = np.where(valid, flat_conf[pos], 0.0)
        # Negative feedback (c < 0): preference 0 (nothing in b), confidence |c| in A.
        weight = np.where(valid, np.abs(conf) - 1.0, 0.0)
        conf = np.maximum(conf, 0.0)
        yu = item_factors[rows]                                     # (m, width, k)
        if width <= WOODBURY_MAX_ITEMS:
            if inverse is None:
                inverse = np.linalg.inv(base)
                inverse = (inverse + inverse.T) * 0.5
            solved = _solve_woodbury(np.asarray(yu, dtype=np.float64), conf, weight, inverse)
        else:
            solved = _solve_normal(yu, conf, weight, base)
        out[members] = solved.astype(np.float32)
    return out


ItemUsers = tuple[np.ndarray, np.ndarray]  # (user vectors (n_i, k), confidences (n_i,))


def fold_in_items(
    xtx: np.ndarray,
    regularization: float,
    items: Sequence[ItemUsers],
) -> np.ndarray:
    """Item vectors from their users' vectors: the item half-step of ALS (see the module notes),
    `fold_in_batch` with users and items swapped. `items[j]` holds the vectors of the users
    who touched item j (one row per user) and their confidences on it. Returns float32
    (len(items), k); an item without users gets the zero vector.
    """
    k = xtx.shape[0]
    if not items:
        return np.zeros((0, k), dtype=np.float32)
    blocks = [np.asarray(vectors, dtype=np.float32).reshape(-1, k) for vectors, _ in items]
    stacked = np.concatenate(blocks) if blocks else np.zeros((0, k), dtype=np.float32)
    histories: list[UserHistory] = []
    start = 0
    for block, (_, conf) in zip(blocks, items, strict=True):
        histories.append((np.arange(start, start + len(block)), np.asarray(conf)))
        start += len(block)
    return fold_in_batch(stacked, xtx, regularization, histories)


@dataclass
class ItemFoldInInputs:
    """What `fold_in_items` needs for some items, and what was left out on the way."""

    items: list[Any] = field(default_factory=list)  # the items to fold in, in input order
    inputs: list[ItemUsers] = field(default_factory=list)
    users_without_vector: int = 0  # (item, user) pairs skipped: no vector under the version
    too_few_users: list[Any] = field(default_factory=list)  # items left without a vector


def item_fold_in_inputs(
    item_users: Iterable[tuple[Any, Sequence[tuple[Any, float]]]],
    vectors: Mapping[Any, np.ndarray],
    min_users: int,
) -> ItemFoldInInputs:
    """The item fold-in's inputs: per item, its (user, confidence) pairs (the item's recent
    users, bounded by the caller) against the users' vectors under one version. Users without
    a vector there are skipped (counted), as are zero confidences (no entry, as in the
    trainer's matrix); an item with fewer than `min_users` users left gets no vector. The
    stream worker (stream.item_foldin) and the replay evaluation both call it."""
    out = ItemFoldInInputs()
    for item, pairs in item_users:
        rows: list[np.ndarray] = []
        conf: list[float] = []
        for user, c in pairs:
            if c == 0.0:
                continue
            vector = vectors.get(user)
            if vector is None:
                out.users_without_vector += 1
                continue
            rows.append(vector)
            conf.append(float(c))
        if len(rows) < min_users:
            out.too_few_users.append(item)
            continue
        out.items.append(item)
        out.inputs.append((np.stack(rows), np.asarray(conf, dtype=np.float64)))
    return out


def score_items(user_vector: np.ndarray, item_factors: np.ndarray) -> np.ndarray:
    """Predicted preference of the user for every item: Y x_u."""
    return item_factors @ user_vector.astype(item_factors.dtype, copy=False)
