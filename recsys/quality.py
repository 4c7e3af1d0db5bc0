"""Ranking metrics at k, vectorised over users. Pure numpy: no I/O, no framework imports.

Inputs, shared by every function:

    recommended   int array (n_users, k): item indices, best first; -1 pads a short list
    relevant      `UserItems`: each user's held-out items in CSR layout (indptr, indices),
                  row u = recommended[u]; users with no relevant item are the caller's
                  business (the time split never produces them)

Definitions (binary relevance; rel_j = 1 when the item at rank j is relevant; n_u = number
of relevant items of user u; every per-user value is averaged over users):

    precision@k = sum_j rel_j / k
    recall@k    = sum_j rel_j / n_u
    F1@k        = 2 P R / (P + R) per user (0 when P + R = 0)
    AP@k        = sum_j (precision@j * rel_j) / min(k, n_u)      MAP@k = mean AP@k
    NDCG@k      = DCG / IDCG,  DCG = sum_j rel_j / log2(j + 1) (j = 1..k),
                  IDCG = DCG of min(k, n_u) relevant items at the top
    hit rate@k  = share of users with at least one relevant item in their top k
    coverage@k  = distinct recommended items / catalogue size

These follow the usual definitions (Microsoft Recommenders uses the same precision, recall and
NDCG; its MAP divides by n_u instead of min(k, n_u), which gives lower values when n_u > k).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METRIC_NAMES = ("precision", "recall", "f1", "map", "ndcg", "hit_rate", "coverage")
# The metrics that reports, charts and tables show, in their column order.
HEADLINE_METRICS = ("precision", "recall", "ndcg", "map", "hit_rate")


@dataclass(frozen=True)
class UserItems:
    """A set of items per user in CSR layout: user u's items are indices[indptr[u]:indptr[u+1]].

    Used for the held-out (relevant) items and for the items to exclude from a ranking."""

    indptr: np.ndarray
    indices: np.ndarray

    @property
    def n_users(self) -> int:
        return len(self.indptr) - 1

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.indptr)

    @classmethod
    def from_lists(cls, items_per_user: list[list[int]] | list[np.ndarray]) -> UserItems:
        counts = np.array([len(items) for items in items_per_user], dtype=np.int64)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        indices = (np.concatenate([np.asarray(i, dtype=np.int64) for i in items_per_user])
                   if len(items_per_user) and counts.sum() else np.empty(0, dtype=np.int64))
        return cls(indptr, indices)


def unique_sorted(values: np.ndarray, return_counts: bool = False
                  ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """np.unique by sorting. numpy >= 2.3's hash-based np.unique is far slower than a sort on
    int64 keys (docs/benchmarks.md), and keys are what evaluation dedupes."""
    flat = np.sort(np.asarray(values).ravel())
    if flat.size == 0:
        return (flat, np.empty(0, dtype=np.int64)) if return_counts else flat
    first = np.concatenate([[True], flat[1:] != flat[:-1]])
    uniq = flat[first]
    if not return_counts:
        return uniq
    starts = np.flatnonzero(first)
    return uniq, np.diff(np.append(starts, flat.size))


def hits(recommended: np.ndarray, relevant: UserItems) -> np.ndarray:
    """Boolean (n_users, k): is recommended[u, j] one of user u's relevant items?

    One sorted-key lookup for all users at once: key = row * width + item.
    """
    recommended = np.asarray(recommended, dtype=np.int64)
    n_users, k = recommended.shape
    if relevant.n_users != n_users:
        raise ValueError(f"{n_users} recommendation rows but {relevant.n_users} relevance rows")
    if k == 0 or len(relevant.indices) == 0:
        return np.zeros((n_users, k), dtype=bool)
    width = int(max(recommended.max(initial=0), relevant.indices.max(initial=0))) + 1
    rows = np.repeat(np.arange(n_users, dtype=np.int64), relevant.counts)
    truth = unique_sorted(rows * width + relevant.indices)
    keys = np.arange(n_users, dtype=np.int64)[:, None] * width + recommended
    pos = np.searchsorted(truth, keys)
    found = truth[np.minimum(pos, len(truth) - 1)] == keys
    return found & (recommended >= 0)


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else 0.0


def precision_at_k(hit: np.ndarray, k: int) -> float:
    return _mean(hit[:, :k].sum(axis=1) / k)


def recall_at_k(hit: np.ndarray, n_relevant: np.ndarray, k: int) -> float:
    return _mean(hit[:, :k].sum(axis=1) / np.maximum(n_relevant, 1))


def f1_at_k(hit: np.ndarray, n_relevant: np.ndarray, k: int) -> float:
    found = hit[:, :k].sum(axis=1)
    p = found / k
    r = found / np.maximum(n_relevant, 1)
    denom = p + r
    f1 = np.divide(2 * p * r, denom, out=np.zeros_like(denom, dtype=np.float64), where=denom > 0)
    return _mean(f1)


def map_at_k(hit: np.ndarray, n_relevant: np.ndarray, k: int) -> float:
    h = hit[:, :k].astype(np.float64)
    # precision@j at every rank j where the item is relevant
    prec = np.cumsum(h, axis=1) / np.arange(1, h.shape[1] + 1)
    ap = (prec * h).sum(axis=1) / np.maximum(np.minimum(n_relevant, k), 1)
    return _mean(ap)


def ndcg_per_user(hit: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    h = hit[:, :k].astype(np.float64)
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = h @ discount[: h.shape[1]]
    ideal = np.concatenate([[0.0], np.cumsum(discount)])[np.minimum(n_relevant, k)]
    return np.divide(dcg, ideal, out=np.zeros_like(dcg), where=ideal > 0)


def ndcg_at_k(hit: np.ndarray, n_relevant: np.ndarray, k: int) -> float:
    return _mean(ndcg_per_user(hit, n_relevant, k))


def hit_rate_at_k(hit: np.ndarray, k: int) -> float:
    return _mean(hit[:, :k].any(axis=1).astype(np.float64))


def catalog_coverage(recommended: np.ndarray, n_items: int, k: int | None = None) -> float:
    recs = np.asarray(recommended)[:, :k] if k else np.asarray(recommended)
    if n_items <= 0:
        return 0.0
    return float(unique_sorted(recs[recs >= 0]).size / n_items)


def ranking_metrics(recommended: np.ndarray, relevant: UserItems, k: int,
                    n_items: int) -> dict[str, float]:
    """Every metric of METRIC_NAMES at k, keyed `name@k` (the gate's spelling: `ndcg@10`)."""
    recommended = np.asarray(recommended, dtype=np.int64)[:, :k]
    if recommended.shape[1] < k:  # a short catalogue: pad so that precision still divides by k
        pad = np.full((recommended.shape[0], k - recommended.shape[1]), -1, dtype=np.int64)
        recommended = np.hstack([recommended, pad])
    hit = hits(recommended, relevant)
    n_rel = relevant.counts
    values = {
        "precision": precision_at_k(hit, k),
        "recall": recall_at_k(hit, n_rel, k),
        "f1": f1_at_k(hit, n_rel, k),
        "map": map_at_k(hit, n_rel, k),
        "ndcg": ndcg_at_k(hit, n_rel, k),
        "hit_rate": hit_rate_at_k(hit, k),
        "coverage": catalog_coverage(recommended, n_items),
    }
    return {f"{name}@{k}": value for name, value in values.items()}
