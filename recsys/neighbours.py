"""Item-to-item neighbours by cosine of item factors: the one definition of "similar items".

cos(i, j) = y_i . y_j / (|y_i| |y_j|), an item never its own neighbour, a zero vector's norm
taken as 1 (its cosines are 0). Two exact selections of the same answer, one per use:

* one item (serving's live fallback when a stored list is short): one mat-vec and the
  sampled-threshold `select_top`, with the caller's exclusions;
* many items (the trainer's published similar lists): blocked products of the normalised
  factors and the pruned `top_k_rows`, -1 padded.
"""

from __future__ import annotations

import numpy as np

from recsys.foldin import score_items
from recsys.quality import UserItems
from recsys.topk import rank_by_factors, select_top


def item_norms(item_factors: np.ndarray) -> np.ndarray:
    """L2 norm of every item vector, float32 (zero rows get 1 so that division is safe)."""
    norms = np.linalg.norm(item_factors, axis=1).astype(np.float32)
    norms[norms == 0] = 1.0
    return norms


def cosine_neighbours(item_factors: np.ndarray, k: int, row: int, *,
                      norms: np.ndarray | None = None, exclude: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """The k items most similar to item `row`, best first: (rows, cosines), 1-D, only real
    neighbours (no padding). `norms` (from `item_norms`) saves recomputing them per call;
    `exclude` holds rows that must not appear."""
    if norms is None:
        norms = item_norms(item_factors)
    scores = score_items(item_factors[row], item_factors)
    scores /= norms * norms[row]
    scores[row] = -np.inf
    if exclude is not None and len(exclude):
        scores[exclude] = -np.inf
    best = select_top(scores, k)
    return best, scores[best]


def cosine_neighbour_lists(item_factors: np.ndarray, k: int, rows: np.ndarray | None = None,
                           *, norms: np.ndarray | None = None
                           ) -> tuple[np.ndarray, np.ndarray]:
    """`cosine_neighbours` of every item in `rows` (default: all) at once: (indices int64
    (len(rows), k), -1 padded; cosines float32, 0 where padded)."""
    factors = np.asarray(item_factors, dtype=np.float32)
    unit = factors / (item_norms(factors) if norms is None else norms)[:, None]
    rows = np.arange(len(unit), dtype=np.int64) if rows is None else np.asarray(rows, np.int64)
    itself = UserItems(np.arange(len(rows) + 1, dtype=np.int64), rows)
    idx, scores = rank_by_factors(unit[rows], unit, k, exclude=itself, return_scores=True)
    return idx, scores
