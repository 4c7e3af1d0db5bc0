"""Repeat purchases ("buy again"): how often users re-buy, and a fused ranking that brings
the user's own items back when a request keeps seen items (`exclude_seen=false`).

    repeat rate  = share of (user, item) pairs bought (event type `transaction`; every event
                   type when the data has no purchases) at two or more distinct times
    fused score  = 1 / (C + rank in the model's list)  +  w / (C + rank in the user's own
                   items, most recent first)           (reciprocal-rank fusion, C = 10)

The model's list excludes the user's items as usual; the buy-again list is only their items,
so w sets how far up re-buys come. w is fitted by the trainer on validation carved from the
training part, on a protocol that keeps seen items (a re-bought item counts as relevant),
from a small grid (w = 0 when that is best), and only when the repeat rate reaches
`trainer_repeat_min_rate`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recsys.matrix import IndexedEvents
from recsys.quality import UserItems, ranking_metrics, unique_sorted

FUSION_C = 10.0
WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)


def repeat_rate(events: IndexedEvents, mask: np.ndarray, purchase: np.ndarray) -> float:
    """Share of bought (user, item) pairs bought at >= 2 distinct times (`purchase`: bool per
    event; all events when none is a purchase)."""
    sel = np.asarray(mask, dtype=bool) & np.asarray(purchase, dtype=bool)
    if not sel.any():
        sel = np.asarray(mask, dtype=bool)
    if not sel.any():
        return 0.0
    n_items = max(int(events.shape[1]), 1)
    pair = events.rows[sel].astype(np.int64) * n_items + events.cols[sel]
    order = np.lexsort((events.timestamps[sel], pair))
    p, t = pair[order], events.timestamps[sel][order]
    new_time = np.concatenate([[True], (p[1:] != p[:-1]) | (t[1:] != t[:-1])])
    pairs, times = unique_sorted(p[new_time], return_counts=True)
    return float((times >= 2).mean()) if len(pairs) else 0.0


def fuse(model_rows: Sequence[int], own_rows: Sequence[int], weight: float, k: int
         ) -> list[tuple[int, float]]:
    """The fused top-k (row, score), best first (see the module docstring)."""
    scores: dict[int, float] = {}
    for rank, row in enumerate(model_rows):
        scores[row] = scores.get(row, 0.0) + 1.0 / (FUSION_C + rank + 1)
    if weight > 0:
        for rank, row in enumerate(own_rows):
            scores[row] = scores.get(row, 0.0) + weight / (FUSION_C + rank + 1)
    return sorted(scores.items(), key=lambda kv: -kv[1])[:k]


def fit_weight(model_recs: np.ndarray, own: list[np.ndarray], relevant: UserItems, k: int,
               n_items: int, metric: str) -> tuple[float, dict[float, float]]:
    """The grid weight with the best `metric` of the fused lists (ties: the smaller weight).

    model_recs: (n_users, k') the model's lists without the users' items; own: each user's
    items, most recent first; relevant: held-out items, re-bought ones included."""
    scores: dict[float, float] = {}
    for w in WEIGHTS:
        recs = np.full((len(own), k), -1, dtype=np.int64)
        for u, items in enumerate(own):
            fused = fuse([r for r in model_recs[u].tolist() if r >= 0], items.tolist(), w, k)
            recs[u, :len(fused)] = [row for row, _ in fused]
        scores[w] = ranking_metrics(recs, relevant, k, n_items).get(metric, 0.0)
    best = max(WEIGHTS, key=lambda w: (scores[w], -w))
    return best, scores


def keep_seen_validation(events: IndexedEvents, train_mask: np.ndarray, fraction: float,
                         max_users: int, seed: int):  # noqa: ANN201 - (fit weights, Holdout, own)
    """A time carve of the training part that keeps seen items: every item a validation user
    interacts with after the cut is relevant, re-bought ones included. Returns (weights of
    the fit part, a Holdout whose `seen` are the users' fit items, each user's fit items
    most recent first)."""
    from recsys.matrix import weight_matrix
    from recsys.split import Holdout, cutoff_for

    mask = np.asarray(train_mask, dtype=bool)
    cutoff = cutoff_for(events.timestamps[mask], fraction)
    fit_mask = mask & (events.timestamps < cutoff)
    later = mask & ~fit_mask
    fit = weight_matrix(events, fit_mask)
    n_items = fit.shape[1]
    allowed = np.bincount(fit.indices, minlength=n_items) > 0
    known = np.diff(fit.indptr) > 0
    rows, cols = events.rows[later].astype(np.int64), events.cols[later].astype(np.int64)
    keep = known[rows] & allowed[cols]
    keys = unique_sorted(rows[keep] * n_items + cols[keep])
    users, counts = unique_sorted(keys // n_items, return_counts=True)
    if len(users) > max_users:
        chosen = np.sort(np.random.default_rng(seed).choice(len(users), max_users,
                                                            replace=False))
        keys = keys[np.isin(keys // n_items, users[chosen])]
        users, counts = users[chosen], counts[chosen]
    relevant = UserItems(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
                         (keys % n_items).astype(np.int64))
    sub = fit[users]
    holdout = Holdout(cutoff_ms=cutoff, users=users, relevant=relevant,
                      seen=UserItems(sub.indptr.astype(np.int64), sub.indices.astype(np.int64)),
                      seen_values=np.asarray(sub.data), allowed=allowed,
                      n_test_pairs=len(keys))
    # each user's fit items by their last time, newest first (what serving's seen set holds)
    sel = np.flatnonzero(fit_mask)
    last: dict[int, dict[int, int]] = {int(u): {} for u in users}
    for r, c, t in zip(events.rows[sel].tolist(), events.cols[sel].tolist(),
                       events.timestamps[sel].tolist(), strict=True):
        items = last.get(r)
        if items is not None and t >= items.get(c, t):
            items[c] = t
    own = [np.array(sorted(last[int(u)], key=lambda c, d=last[int(u)]: -d[c]), dtype=np.int64)
           for u in users]
    return fit, holdout, own
