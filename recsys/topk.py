"""Every top-k selection of the project. Pure numpy.

* `top_k`: the k best of one score vector by partial sort (stream worker, tests' oracle).
* `select_top`: the same answer, pre-filtered by a sampled threshold; the serving hot path
  (one user's scores over a large catalogue).
* `top_k_rows` / `rank*`: many rows at once with each row's own exclusions, pruned to
  candidate columns; offline evaluation (trainer gate, `recsys evaluate`) and the trainer's
  similar-item lists. Factor models score with a chunked matrix product, the popularity
  baseline with one shared score vector.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from recsys.quality import UserItems, hits

# Pre-filter of `select_top`: every SAMPLE_STRIDE-th score estimates a threshold that about
# OVERSAMPLE * k scores reach. Below PREFILTER_MIN_ITEMS scores a plain partial sort is as fast.
SAMPLE_STRIDE = 16
OVERSAMPLE = 3
PREFILTER_MIN_ITEMS = 4096

# Scores of one chunk of users are materialised as a dense (chunk, n_items) float32 block;
# 1024 rows x 100k items is 400 MB, so the chunk shrinks with the catalogue.
_BLOCK_VALUES = 16_000_000


# Below this many scores a ranking runs in the calling thread: starting and joining a thread
# pool costs more than a small holdout's whole ranking, while the similar-item scores of a
# catalogue gain from a second thread (figures in docs/benchmarks.md).
_THREADED_MIN_VALUES = 1_000_000


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


def select_top(scores: np.ndarray, k: int) -> np.ndarray:
    """`top_k(scores, k)`, exactly, in about half its time on large catalogues.

    A threshold t from a strided sample keeps only the scores >= t (a ~3k-item candidate
    set, found by one vectorised compare) for the partial sort. Exact whenever at least k
    scores reach t: then the k-th best score is >= t, so every item of the top k (ties
    included) is a candidate. Otherwise (rare: a sample unlike the rest, many excluded
    rows) it falls back to the full partial sort.
    """
    n = len(scores)
    if n < PREFILTER_MIN_ITEMS or k * SAMPLE_STRIDE * OVERSAMPLE > n:
        return top_k(scores, k)
    sample = scores[::SAMPLE_STRIDE]  # a view; np.partition below copies it
    rank = min(len(sample), -(-OVERSAMPLE * k // SAMPLE_STRIDE))
    threshold = np.partition(sample, len(sample) - rank)[len(sample) - rank]
    candidates = np.flatnonzero(scores >= threshold)
    if len(candidates) < k:
        return top_k(scores, k)
    return candidates[top_k(scores[candidates], k)]


def _chunk_rows(n_items: int) -> int:
    return max(1, min(4096, _BLOCK_VALUES // max(n_items, 1)))


def _candidate_columns(scores: np.ndarray, k: int) -> np.ndarray | None:
    """Columns that surely hold every row's k best scores, about 2 sqrt(k m) of the m.

    The columns are cut into G groups of g (group j = columns j, j + G, j + 2G, ...: strided,
    so the group maxima are an elementwise max of g contiguous slices, one fast pass). If an
    item is among a row's k best, its group's maximum is at least its score, so its group is
    among the k groups with the largest maxima (else k other groups' maxima, k distinct
    items, would all beat it). Those k groups, plus the few columns after the last full
    group, are the candidates. g = sqrt(m / k) balances the two selections (G groups, k g
    candidates). None when the catalogue is too small for this to pay.
    """
    n, m = scores.shape
    g = int(np.sqrt(m / k))
    groups = m // g if g else 0
    if g < 4 or groups <= 2 * k:
        return None
    main = g * groups
    # splitting the (contiguous) column axis is a view, not a copy
    maxima = scores[:, :main].reshape(n, g, groups).max(axis=1)
    top = np.argpartition(-maxima, k - 1, axis=1)[:, :k]
    cols = (top[:, :, None] + np.arange(g, dtype=np.int64) * groups).reshape(n, k * g)
    if main < m:
        tail = np.broadcast_to(np.arange(main, m, dtype=np.int64), (n, m - main))
        cols = np.hstack([cols, tail])
    return cols


def top_k_rows(scores: np.ndarray, k: int, return_scores: bool = False
               ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Column indices of the k best finite scores of every row, best first; -1 pads rows with
    fewer than k finite scores (an excluded item scores -inf). With `return_scores`, also
    their scores (float32, 0 where padded).

    Exact: a full argpartition of every row is costly per score; pruning to candidate
    columns first (`_candidate_columns`) leaves one vectorised max pass over the scores.
    """
    scores = np.asarray(scores)
    n, m = scores.shape
    kk = min(k, m)
    out = np.full((n, k), -1, dtype=np.int64)
    out_scores = np.zeros((n, k), dtype=np.float32)
    if kk == 0 or n == 0:
        return (out, out_scores) if return_scores else out
    cols = _candidate_columns(scores, kk)
    cand = scores if cols is None else np.take_along_axis(scores, cols, axis=1)
    part = np.argpartition(-cand, kk - 1, axis=1)[:, :kk]
    part_scores = np.take_along_axis(cand, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    best = np.take_along_axis(part, order, axis=1)
    if cols is not None:
        best = np.take_along_axis(cols, best, axis=1)
    best_scores = np.take_along_axis(part_scores, order, axis=1)
    finite = np.isfinite(best_scores)
    out[:, :kk] = np.where(finite, best, -1)
    if not return_scores:
        return out
    out_scores[:, :kk] = np.where(finite, best_scores, 0.0)
    return out, out_scores


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
    return _rank_blocks(score_block, n_users, n_items, k, exclude, allowed, fresh=False)[0]


def _rank_blocks(score_block: Callable[[int, int], np.ndarray], n_users: int, n_items: int,
                 k: int, exclude: UserItems | None, allowed: np.ndarray | None, fresh: bool,
                 return_scores: bool = False, threads: int = 1
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """`rank` with its scores; `fresh` says score_block returns a new float32 array each time,
    which is then masked in place instead of copied. With threads > 1, chunks run in a
    thread pool: numpy's product, reductions and partitions release the GIL, so each chunk
    keeps one core busy (BLAS itself stays single-threaded under the trainer)."""
    disallowed = None if allowed is None else np.flatnonzero(~np.asarray(allowed, dtype=bool))
    out = np.empty((n_users, k), dtype=np.int64)
    out_scores = np.empty((n_users, k), dtype=np.float32) if return_scores else None
    step = _chunk_rows(n_items)
    if n_users * n_items < _THREADED_MIN_VALUES:
        threads = 1  # starting and joining a pool would cost more than the chunks
    if threads > 1:  # at least two chunks per thread, for balance
        step = max(1, min(step, -(-n_users // (2 * threads))))

    def one(start: int) -> None:
        stop = min(start + step, n_users)
        block = score_block(start, stop)
        if not fresh or block.dtype != np.float32:
            block = np.array(block, dtype=np.float32, copy=True)
        _mask_rows(block, exclude, start, disallowed)
        if out_scores is None:
            out[start:stop] = top_k_rows(block, k)
        else:
            out[start:stop], out_scores[start:stop] = top_k_rows(block, k, return_scores=True)

    starts = range(0, n_users, step)
    if threads > 1 and len(starts) > 1:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(one, starts))  # list(): re-raises a chunk's exception here
    else:
        for start in starts:
            one(start)
    return out, out_scores


def _first_k_allowed(ids: np.ndarray, valid: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the first k ids whose `valid` flag is set, in order; -1 pads. Also returns
    how many valid ids each row had."""
    order = np.argsort(~valid, axis=1, kind="stable")[:, :k]
    picked = np.take_along_axis(ids, order, axis=1)
    ok = np.take_along_axis(valid, order, axis=1)
    out = np.full((len(ids), k), -1, dtype=np.int64)
    out[:, :picked.shape[1]] = np.where(ok, picked, -1)
    return out, valid.sum(axis=1)


def _excluded(candidates: np.ndarray, exclude: UserItems | None, n_items: int = 0
              ) -> np.ndarray:
    """Boolean (n_users, width): is candidates[u, j] one of user u's excluded items?"""
    if exclude is None or not len(exclude.indices):
        return np.zeros(candidates.shape, dtype=bool)
    n_users = candidates.shape[0]
    if 0 < n_users * n_items <= _BLOCK_VALUES:
        # a dense (users x items) flag matrix, one scatter and one gather: cheaper than the
        # sorted-key lookup below for a small holdout (docs/benchmarks.md)
        dense = np.zeros((n_users, n_items), dtype=bool)
        dense[np.repeat(np.arange(n_users), exclude.counts), exclude.indices] = True
        return np.take_along_axis(dense, candidates, axis=1) & (candidates >= 0)
    return hits(candidates, exclude)  # membership test: same sorted-key lookup


def rank_by_factors(user_vectors: np.ndarray, item_factors: np.ndarray, k: int,
                    exclude: UserItems | None = None, allowed: np.ndarray | None = None,
                    return_scores: bool = False, threads: int = 0
                    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Top-k by dot product x_u . y_i (the ALS score). Same contract as `rank`; with
    `return_scores` also the scores (float32, 0 where padded). threads: 0 = all cores.

    Dense blocks: one BLAS product per chunk of users, exclusions written as -inf, then the
    pruned exact top-k of `top_k_rows`. The product is the floor of the cost (2 k_f m flops
    a user); the selection adds about a third of it. (implicit's topk does the same product
    but selects with a heap of k + (exclusions) per row, which was slower here once a
    user's own items have to be over-fetched and dropped afterwards.)
    """
    users = np.ascontiguousarray(user_vectors, dtype=np.float32)
    items_t = np.ascontiguousarray(np.asarray(item_factors, dtype=np.float32).T)
    n_users, n_items = len(users), items_t.shape[1]
    if n_users == 0 or k == 0 or n_items == 0:
        empty = np.full((n_users, k), -1, dtype=np.int64)
        return (empty, np.zeros((n_users, k), np.float32)) if return_scores else empty
    out, scores = _rank_blocks(lambda a, b: users[a:b] @ items_t, n_users, n_items, k,
                               exclude, allowed, fresh=True, return_scores=return_scores,
                               threads=threads or os.cpu_count() or 1)
    return (out, scores) if return_scores else out


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
    valid = ~_excluded(ids, exclude, len(scores))
    out, n_valid = _first_k_allowed(np.ascontiguousarray(ids), valid, k)
    short = np.flatnonzero((n_valid < k) & (len(head) < len(order)))
    for user in short:  # rare: a user who has seen most of the head
        seen = (set() if exclude is None else
                set(exclude.indices[exclude.indptr[user]:exclude.indptr[user + 1]].tolist()))
        picked = [i for i in order[: k + len(seen)].tolist() if i not in seen][:k]
        out[user] = -1
        out[user, :len(picked)] = picked
    return out
