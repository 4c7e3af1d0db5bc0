"""Top-k ranking of many users at once, with each user's own exclusions. Pure numpy.

Used by offline evaluation (trainer gate, `recsys evaluate`) for every model: factor models
score with a chunked matrix product, the popularity baseline with one shared score vector.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from evaluation.metrics import UserItems

# Scores of one chunk of users are materialised as a dense (chunk, n_items) float32 block;
# 1024 rows x 100k items is 400 MB, so the chunk shrinks with the catalogue.
_BLOCK_VALUES = 16_000_000


def _chunk_rows(n_items: int) -> int:
    return max(1, min(4096, _BLOCK_VALUES // max(n_items, 1)))


def top_k_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k best finite scores of every row, best first; -1 pads rows with
    fewer than k finite scores (an excluded item scores -inf)."""
    n, m = scores.shape
    kk = min(k, m)
    out = np.full((n, k), -1, dtype=np.int64)
    if kk == 0 or n == 0:
        return out
    part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    best = np.take_along_axis(part, order, axis=1)
    best_scores = np.take_along_axis(part_scores, order, axis=1)
    out[:, :kk] = np.where(np.isfinite(best_scores), best, -1)
    return out


def _mask_rows(block: np.ndarray, exclude: UserItems | None, start: int,
               disallowed: np.ndarray | None) -> None:
    if disallowed is not None:
        block[:, disallowed] = -np.inf
    if exclude is None:
        return
    stop = start + block.shape[0]
    lo, hi = exclude.indptr[start], exclude.indptr[stop]
    rows = np.repeat(np.arange(block.shape[0]), np.diff(exclude.indptr[start:stop + 1]))
    block[rows, exclude.indices[lo:hi]] = -np.inf


def rank(score_block: Callable[[int, int], np.ndarray], n_users: int, n_items: int, k: int,
         exclude: UserItems | None = None, allowed: np.ndarray | None = None) -> np.ndarray:
    """Top-k items of users 0..n_users-1, chunk by chunk.

    score_block(start, stop) returns the float scores of users start..stop-1 over all items;
    `exclude` removes each user's own items (seen in training), `allowed` (bool per item)
    restricts the catalogue (items that exist in the training data).
    """
    disallowed = None if allowed is None else np.flatnonzero(~np.asarray(allowed, dtype=bool))
    out = np.empty((n_users, k), dtype=np.int64)
    step = _chunk_rows(n_items)
    for start in range(0, n_users, step):
        stop = min(start + step, n_users)
        block = np.array(score_block(start, stop), dtype=np.float32, copy=True)
        _mask_rows(block, exclude, start, disallowed)
        out[start:stop] = top_k_rows(block, k)
    return out


def rank_by_factors(user_vectors: np.ndarray, item_factors: np.ndarray, k: int,
                    exclude: UserItems | None = None,
                    allowed: np.ndarray | None = None) -> np.ndarray:
    """Top-k by dot product x_u . y_i (the ALS score), chunked."""
    users = np.asarray(user_vectors, dtype=np.float32)
    items_t = np.ascontiguousarray(np.asarray(item_factors, dtype=np.float32).T)
    return rank(lambda a, b: users[a:b] @ items_t, len(users), items_t.shape[1], k,
                exclude, allowed)


def rank_by_scores(item_scores: np.ndarray, n_users: int, k: int,
                   exclude: UserItems | None = None,
                   allowed: np.ndarray | None = None) -> np.ndarray:
    """Top-k by one score vector shared by every user (popularity), with per-user exclusions."""
    scores = np.asarray(item_scores, dtype=np.float32)
    return rank(lambda a, b: np.broadcast_to(scores, (b - a, len(scores))), n_users,
                len(scores), k, exclude, allowed)
