"""Approximate maximum-inner-product search over a version's item factors (faiss IVF).

Scoring every item per request (one mat-vec over Y) is linear in the catalogue; at a million
items it no longer fits a request's budget. An inverted-file index cuts the catalogue into
`n_lists` cells around coarse centroids c_1..c_L; a query x visits only the `n_probe` cells
whose centroids score highest (c_l . x) and scores their items exactly. The result is a
candidate set, not the answer: serving re-scores the candidates with the exact maths
(s_i = y_i . x), applies its filters and exclusions, and keeps the top k.

Why faiss's IVF-flat rather than a graph (HNSW): its published form is tiny. A version
carries the centroids (n_lists x k floats) and each item's cell (one int32 per item), not a
copy of the vectors nor a graph; a reader rebuilds the index from the item factors it
loads anyway, by placing each row into its cell (no distance computations). The trainer's
measurements of both libraries are on docs/scale.md.

Published form (`pack_layout`): an `np.savez` archive of `centroids` (float32, n_lists x k)
and `assign` (int32, n_items), under `Keys.model_ann(version)`; the manifest names the
format in `ann_format`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from recsys.errors import ModelIntegrityError

ANN_FORMAT = "faiss-ivf-flat-ip/v1"
# k-means learns the centroids from this many items per list (faiss warns below 39).
TRAIN_POINTS_PER_LIST = 40


@dataclass(frozen=True, eq=False)
class AnnLayout:
    """The published part of an index: coarse centroids and every item's cell."""

    centroids: np.ndarray  # float32 (n_lists, k)
    assign: np.ndarray  # int32 (n_items,), cell of each item row

    @property
    def n_lists(self) -> int:
        return int(self.centroids.shape[0])


def default_lists(n_items: int) -> int:
    """About 4 sqrt(n) cells: the rule of thumb of faiss's guidelines for IVF sizes."""
    return max(1, min(n_items, int(4 * math.sqrt(n_items))))


def build_layout(item_factors: np.ndarray, n_lists: int = 0, seed: int = 0,
                 threads: int = 0) -> AnnLayout:
    """Learn the centroids (k-means on a sample of items) and assign every item to its cell
    by the largest inner product, as faiss's IVF does for inner-product search."""
    import faiss

    factors = np.ascontiguousarray(item_factors, dtype=np.float32)
    n, dim = factors.shape
    if n == 0:
        raise ModelIntegrityError("cannot index an empty catalogue")
    lists = n_lists or default_lists(n)
    lists = min(lists, n)
    if threads:
        faiss.omp_set_num_threads(threads)
    rng = np.random.default_rng(seed)
    train_n = min(n, lists * TRAIN_POINTS_PER_LIST)
    sample = factors if train_n == n else factors[np.sort(rng.choice(n, train_n, replace=False))]
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.train(sample)
    centroids = quantizer.reconstruct_n(0, lists).astype(np.float32)
    _, cells = quantizer.search(factors, 1)
    return AnnLayout(centroids=centroids, assign=cells[:, 0].astype(np.int32))


def pack_layout(layout: AnnLayout) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, centroids=layout.centroids, assign=layout.assign)
    return buffer.getvalue()


def unpack_layout(raw: bytes, n_items: int, factors: int) -> AnnLayout:
    """Read a published layout, checking that it fits the version's item factors."""
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as archive:
            centroids = np.asarray(archive["centroids"], dtype=np.float32)
            assign = np.asarray(archive["assign"], dtype=np.int32)
    except (OSError, KeyError, ValueError) as exc:
        raise ModelIntegrityError(f"unreadable ANN layout: {exc}") from None
    if centroids.ndim != 2 or centroids.shape[1] != factors or len(centroids) == 0:
        raise ModelIntegrityError(f"ANN centroids {centroids.shape} do not match {factors} "
                                  "factors")
    if assign.shape != (n_items,):
        raise ModelIntegrityError(f"ANN assignment of {assign.shape} rows for {n_items} items")
    if len(assign) and (assign.min() < 0 or assign.max() >= len(centroids)):
        raise ModelIntegrityError("ANN assignment names a cell outside its centroids")
    if not np.isfinite(centroids).all():
        raise ModelIntegrityError("ANN centroids contain NaN or Inf")
    return AnnLayout(centroids=centroids, assign=assign)


class AnnIndex:
    """An IVF index over one version's item factors, rebuilt from its published layout.

    `candidates(x, n)` returns up to n item rows, best approximate score first; callers
    re-score them exactly. Searches are read-only and may run in several threads."""

    def __init__(self, item_factors: np.ndarray, layout: AnnLayout, n_probe: int) -> None:
        import faiss
        from faiss.contrib.ivf_tools import add_preassigned

        factors = np.ascontiguousarray(item_factors, dtype=np.float32)
        if layout.assign.shape != (len(factors),):
            raise ModelIntegrityError("ANN layout does not match the item factors")
        dim = factors.shape[1]
        quantizer = faiss.IndexFlatIP(dim)
        quantizer.add(layout.centroids)
        index = faiss.IndexIVFFlat(quantizer, dim, layout.n_lists, faiss.METRIC_INNER_PRODUCT)
        index.is_trained = True
        add_preassigned(index, factors, layout.assign.astype(np.int64))
        index.nprobe = max(1, min(n_probe, layout.n_lists))
        # One query at a time gains nothing from OpenMP threads, and idle ones spin on a
        # core that the serving process's event loop needs (readers only: a trainer sets
        # its own count in build_layout).
        faiss.omp_set_num_threads(1)
        self._index, self._quantizer = index, quantizer  # the index does not own its quantizer
        self.n_items = len(factors)

    @property
    def n_probe(self) -> int:
        return int(self._index.nprobe)

    def candidates(self, vector: np.ndarray, n: int) -> np.ndarray:
        query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1)
        _, rows = self._index.search(query, max(1, min(n, self.n_items)))
        found = rows[0]
        return found[found >= 0].astype(np.intp)


def recall_at_k(approx: Sequence[np.ndarray], exact: np.ndarray) -> float:
    """Share of the exact top-k rows that the approximate top-k found (rows of queries)."""
    if exact.size == 0:
        return 1.0
    hits = sum(len(np.intersect1d(a, e)) for a, e in zip(approx, exact, strict=True))
    return hits / exact.size
