"""Pure scoring and filtering for the serving hot path. No I/O, no framework imports.

The maths is the core's (recsys.foldin: `score_items` = Y x_u, `fold_in` for anonymous
sessions; recsys.topk: `select_top`, the exact pre-filtered top-k; recsys.neighbours: cosine
neighbours); this module only adds the bookkeeping around it: exclusions and candidate
restrictions as index arrays (so no per-request Python loop touches every item), and merging
ranked fallback lists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from recsys.ann import AnnIndex
from recsys.confidence import confidence
from recsys.foldin import fold_in, score_items
from recsys.sequence_model import UserTower, recent_items, to_rows
from recsys.topk import select_top

EMPTY_ROWS = np.empty(0, dtype=np.intp)

# `score_batch` multiplies this many items at a time: a (block x users) product that stays in
# the core's cache while it is transposed into the users' rows.
SCORE_BLOCK = 1024

Ranked = list[tuple[str, float]]


def rows_of(index: Mapping[str, int], item_ids: Iterable[str]) -> np.ndarray:
    """Row indices of the ids that the model knows (unknown ids are skipped)."""
    rows = [row for row in map(index.get, item_ids) if row is not None]
    return np.asarray(rows, dtype=np.intp) if rows else EMPTY_ROWS


def join_rows(*parts: np.ndarray) -> np.ndarray:
    parts_ = [p for p in parts if len(p)]
    if not parts_:
        return EMPTY_ROWS
    return parts_[0] if len(parts_) == 1 else np.concatenate(parts_)


def score_batch(item_factors: np.ndarray, user_vectors: Sequence[np.ndarray]) -> np.ndarray:
    """Every item's score for several users at once, one row per user: (Y [x_1 .. x_B])^T.

    Scoring is memory-bound: one mat-vec streams all of Y (12 MB at 50,000 x 64) for 64
    multiply-adds per item. A mat-mat product streams Y once for B users, so B users cost
    far less than B mat-vecs (figures in docs/benchmarks.md). Row j equals
    `score_items(user_vectors[j], item_factors)` up to float rounding (another summation
    order).
    """
    if len(user_vectors) == 1:
        return score_items(user_vectors[0], item_factors)[None, :]
    users = np.stack(user_vectors, axis=1).astype(item_factors.dtype, copy=False)
    n = len(item_factors)
    out = np.empty((len(user_vectors), n), dtype=item_factors.dtype)
    block = np.empty((min(SCORE_BLOCK, n), len(user_vectors)), dtype=item_factors.dtype)
    for start in range(0, n, SCORE_BLOCK):
        stop = min(n, start + SCORE_BLOCK)
        np.matmul(item_factors[start:stop], users, out=block[:stop - start])
        out[:, start:stop] = block[:stop - start].T
    return out


def recommend(
    user_vector: np.ndarray,
    item_factors: np.ndarray,
    k: int,
    exclude: np.ndarray | None = None,
    candidates: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k rows for a user and their scores, best first.

    One mat-vec over all items (Y x_u); excluded rows get -inf; when `candidates` is given
    (a category filter), only those rows compete.
    """
    # A fresh array: safe to mutate.
    return top_of_scores(score_items(user_vector, item_factors), k, exclude, candidates)


def top_of_scores(
    scores: np.ndarray,
    k: int,
    exclude: np.ndarray | None = None,
    candidates: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`recommend` from a user's scores of every item, which it overwrites (exclusions)."""
    if exclude is not None and len(exclude):
        scores[exclude] = -np.inf
    if candidates is not None:
        sub = scores[candidates]
        best = select_top(sub, k)
        return candidates[best], sub[best]
    best = select_top(scores, k)
    return best, scores[best]


def top_page(
    scores: np.ndarray,
    offset: int,
    k: int,
    exclude: np.ndarray | None = None,
    candidates: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Positions offset .. offset + k - 1 of the ranking by score, ties broken by row: a
    total order, so the pages of one score vector tile it (no overlap, no gap), whatever k.

    `top_of_scores` for offset + k, then every row tied with the last one is let in (the
    partial sort keeps an arbitrary subset of a tie) before the (score, row) sort. Overwrites
    `scores` like `top_of_scores`.
    """
    depth = offset + k
    rows, vals = top_of_scores(scores, depth, exclude, candidates)
    if not len(rows):
        return rows, vals
    if len(rows) == depth:
        boundary = vals[-1]
        if candidates is not None:
            pool = candidates[scores[candidates] >= boundary]
        else:
            pool = np.flatnonzero(scores >= boundary)
        if len(pool) > len(rows):
            rows, vals = pool, scores[pool]
    order = np.lexsort((rows, -vals.astype(np.float64)))[offset:depth]
    return rows[order], vals[order]


def _with_unindexed(rows: np.ndarray, scores: np.ndarray, extra: np.ndarray, start: int,
                    drop: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The top k of the index's candidates (`rows`, their exact `scores`) and of the rows
    past the index: the rows a served matrix gained since the version (and its index) was
    published, from the stream's item fold-in or mapped from attributes (serving.fresh_items,
    serving.content_items). The index cannot return those, so the approximate paths score
    them exactly beside its candidates: `extra` holds the scores of rows start.. (one
    mat-vec over a contiguous slice, no copy of the rows); rows in `drop` never come out.
    None when fewer than k rows are left in all."""
    if len(extra) and len(drop):
        past = np.unique(drop[drop >= start]) - start
        extra[past] = -np.inf
        n_extra = len(extra) - len(past)
    else:
        n_extra = len(extra)
    if len(rows) + n_extra < k:
        return None
    if n_extra:
        top = select_top(extra, min(k, len(extra)))
        top = top[np.isfinite(extra[top])]
        rows = np.concatenate([rows, top + start])
        scores = np.concatenate([scores, extra[top].astype(scores.dtype, copy=False)])
    best = select_top(scores, k)
    return rows[best], scores[best]


def ann_recommend(
    ann: AnnIndex,
    user_vector: np.ndarray,
    item_factors: np.ndarray,
    k: int,
    exclude: np.ndarray,
    oversample: int,
) -> tuple[np.ndarray, np.ndarray] | None:
    """`recommend` from an approximate index's candidates re-scored exactly (s_i = y_i . x),
    and the rows past the index (`_with_unindexed`).

    The index is asked for oversample * (k + excluded) rows, so that k remain after the
    exclusions; None when fewer do (the caller scans every item instead)."""
    x = user_vector.astype(item_factors.dtype, copy=False)
    rows = ann.candidates(user_vector, oversample * (k + len(exclude)))
    if len(exclude):
        rows = rows[~np.isin(rows, exclude)]
    start = ann.n_items
    return _with_unindexed(rows, item_factors[rows] @ x, item_factors[start:] @ x, start,
                           exclude, k)


def subset_recommend(
    user_vector: np.ndarray,
    item_factors: np.ndarray,
    k: int,
    exclude: np.ndarray,
    candidates: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """`recommend` restricted to `candidates` (a filter), scoring only those rows."""
    rows = candidates[~np.isin(candidates, exclude)] if len(exclude) else candidates
    scores = item_factors[rows] @ user_vector.astype(item_factors.dtype, copy=False)
    best = select_top(scores, k)
    return rows[best], scores[best]


def subset_neighbours(
    row: int,
    item_factors: np.ndarray,
    norms: np.ndarray,
    k: int,
    exclude: np.ndarray,
    candidates: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """`cosine_neighbours` of y_row restricted to `candidates` (a filter), scoring only
    those rows: cos(i, row) = y_i . y_row / (|y_i| |y_row|)."""
    drop = candidates == row
    if len(exclude):
        drop |= np.isin(candidates, exclude)
    rows = candidates[~drop]
    scores = (item_factors[rows] @ item_factors[row]) / (norms[rows] * norms[row])
    best = select_top(scores, k)
    return rows[best], scores[best]


def ann_neighbours(
    ann: AnnIndex,
    row: int,
    item_factors: np.ndarray,
    norms: np.ndarray,
    k: int,
    exclude: np.ndarray,
    oversample: int,
) -> tuple[np.ndarray, np.ndarray] | None:
    """`cosine_neighbours` among an approximate index's candidates for y_row (inner product)
    and the rows past the index (`_with_unindexed`), by exact cosine; None when fewer than k
    remain after the exclusions. `row` may itself be past the index (a fresh item): its
    vector queries the index like any other."""
    y = item_factors[row]
    rows = ann.candidates(y, oversample * (k + len(exclude) + 1))
    drop = rows == row
    if len(exclude):
        drop |= np.isin(rows, exclude)
    rows = rows[~drop]
    start = ann.n_items
    scores = (item_factors[rows] @ y) / (norms[rows] * norms[row])
    extra = (item_factors[start:] @ y) / (norms[start:] * norms[row])
    return _with_unindexed(rows, scores, extra, start,
                           np.append(exclude, row).astype(np.intp, copy=False), k)


def session_confidences(
    rows: Sequence[int], weights: Sequence[float], alpha: float
) -> tuple[np.ndarray, np.ndarray]:
    """Sum the weights of repeated items and turn them into confidences c = 1 + alpha * w."""
    rows_arr = np.asarray(rows, dtype=np.intp)
    unique, inverse = np.unique(rows_arr, return_inverse=True)
    summed = np.bincount(inverse, weights=np.asarray(weights, dtype=np.float64),
                         minlength=len(unique))
    nonzero = summed != 0.0  # no entry, as in the trainer's matrix
    return unique[nonzero], np.asarray(confidence(summed[nonzero], alpha), dtype=np.float64)


def fold_in_session(
    item_factors: np.ndarray,
    yty: np.ndarray,
    regularization: float,
    alpha: float,
    rows: Sequence[int],
    weights: Sequence[float],
) -> np.ndarray:
    """The vector of a visitor without an id, from the items of their session."""
    unique, conf = session_confidences(rows, weights, alpha)
    return fold_in(item_factors, yty, regularization, unique, conf)


def session_tower_vector(tower: UserTower, index: Mapping[str, int],
                         item_ids: Sequence[str]) -> np.ndarray:
    """The vector of a visitor without an id under a neural version: the session's items
    (given oldest first) as the stream orders a history (each item at its last position),
    unknown ones skipped, cut to the tower's window, through the version's user tower."""
    last = {item: [1.0, position] for position, item in enumerate(item_ids)}
    rows = to_rows([recent_items(last)], index, tower.window).rows[0]
    return tower.user_vectors([rows])[0]


def merge_ranked(
    sources: Iterable[tuple[str, Ranked]],
    k: int,
    excluded: set[str] | frozenset[str],
    allowed: Callable[[str], bool] | None = None,
) -> tuple[list[tuple[str, float, str]], list[str]]:
    """Fill up to k items from ranked lists in order, skipping excluded and duplicate ids.

    Returns (item, score, source name) triples and the names of the sources that contributed.
    The source lists are only walked until k items are found.
    """
    out: list[tuple[str, float, str]] = []
    used: list[str] = []
    taken: set[str] = set()
    for name, ranked in sources:
        if len(out) >= k:
            break
        before = len(out)
        for item, score in ranked:
            if item in excluded or item in taken or (allowed is not None and not allowed(item)):
                continue
            taken.add(item)
            out.append((item, float(score), name))
            if len(out) >= k:
                break
        if len(out) > before:
            used.append(name)
    return out, used
