"""Top-k ranking of many users at once, with each user's own exclusions. Pure numpy.

Used by offline evaluation (trainer gate, `recsys evaluate`) for every model: factor models
score with a chunked matrix product, the popularity baseline with one shared score vector.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from evaluation.metrics import UserItems, hits

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


def _first_k_allowed(ids: np.ndarray, valid: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the first k ids whose `valid` flag is set, in order; -1 pads. Also returns
    how many valid ids each row had."""
    order = np.argsort(~valid, axis=1, kind="stable")[:, :k]
    picked = np.take_along_axis(ids, order, axis=1)
    ok = np.take_along_axis(valid, order, axis=1)
    out = np.full((len(ids), k), -1, dtype=np.int64)
    out[:, :picked.shape[1]] = np.where(ok, picked, -1)
    return out, valid.sum(axis=1)


def _excluded(candidates: np.ndarray, exclude: UserItems | None) -> np.ndarray:
    if exclude is None or not len(exclude.indices):
        return np.zeros(candidates.shape, dtype=bool)
    return hits(candidates, exclude)  # membership test: same sorted-key lookup


def rank_by_factors(user_vectors: np.ndarray, item_factors: np.ndarray, k: int,
                    exclude: UserItems | None = None,
                    allowed: np.ndarray | None = None) -> np.ndarray:
    """Top-k by dot product x_u . y_i (the ALS score). Same contract as `rank`.

    implicit's C++ top-k (blocked product + heap selection) over-fetches k + p candidates,
    p = the 99th percentile of the users' exclusion counts; the user's own items are then
    dropped here. The few users with more exclusions than that among their candidates are
    ranked again with the dense path. (implicit's own per-user filter slices a sparse matrix
    per small batch in Python, which made it slower than the dense path.)
    """
    from implicit.cpu.topk import topk

    users = np.ascontiguousarray(user_vectors, dtype=np.float32)
    items = np.ascontiguousarray(item_factors, dtype=np.float32)
    n_users, n_items = len(users), len(items)
    if n_users == 0 or k == 0 or n_items == 0:
        return np.full((n_users, k), -1, dtype=np.int64)
    counts = exclude.counts if exclude is not None else np.zeros(n_users, dtype=np.int64)
    fetch = min(n_items, k + int(np.ceil(np.quantile(counts, 0.99))) if len(counts) else k)
    item_filter = (None if allowed is None else
                   np.flatnonzero(~np.asarray(allowed, dtype=bool)).astype(np.int32))
    ids, scores = topk(items, users, fetch,
                       filter_items=item_filter if item_filter is not None and len(item_filter)
                       else None)
    ids = ids.astype(np.int64)
    # filtered items come back with score -FLT_MAX when a row runs out of candidates
    valid = (scores > np.finfo(np.float32).min / 2) & ~_excluded(ids, exclude)
    out, n_valid = _first_k_allowed(ids, valid, k)
    short = np.flatnonzero((n_valid < k) & (fetch < n_items))
    if len(short):
        sub = None if exclude is None else UserItems(
            np.concatenate([[0], np.cumsum(counts[short])]).astype(np.int64),
            np.concatenate([exclude.indices[exclude.indptr[u]:exclude.indptr[u + 1]]
                            for u in short]).astype(np.int64))
        items_t = np.ascontiguousarray(items.T)
        out[short] = rank(lambda a, b: users[short[a:b]] @ items_t, len(short), n_items, k,
                          sub, allowed)
    return out


def rank_by_scores(item_scores: np.ndarray, n_users: int, k: int,
                   exclude: UserItems | None = None,
                   allowed: np.ndarray | None = None) -> np.ndarray:
    """Top-k by one score vector shared by every user (popularity), with per-user exclusions.

    One global order; each user takes the first k of its head that they have not seen
    (vectorised membership test). Users who have seen most of that head fall back to the
    dense path.
    """
    scores = np.asarray(item_scores, dtype=np.float64)
    if n_users == 0 or k == 0:
        return np.full((n_users, k), -1, dtype=np.int64)
    candidates = np.flatnonzero(np.isfinite(scores) & (True if allowed is None else
                                                       np.asarray(allowed, dtype=bool)))
    order = candidates[np.argsort(-scores[candidates], kind="stable")]
    counts = exclude.counts if exclude is not None else np.zeros(n_users, dtype=np.int64)
    head = order[:k + int(np.ceil(np.quantile(counts, 0.99)))]
    ids = np.broadcast_to(head, (n_users, len(head)))
    valid = ~_excluded(ids, exclude)
    out, n_valid = _first_k_allowed(np.ascontiguousarray(ids), valid, k)
    short = np.flatnonzero((n_valid < k) & (len(head) < len(order)))
    for user in short:  # rare: a user who has seen most of the head
        seen = (set() if exclude is None else
                set(exclude.indices[exclude.indptr[user]:exclude.indptr[user + 1]].tolist()))
        picked = [i for i in order[: k + len(seen)].tolist() if i not in seen][:k]
        out[user] = -1
        out[user, :len(picked)] = picked
    return out
