"""A neural version of a training run: evaluate a tower, and the arrays a version publishes.

The candidate itself is recsys.candidates.neural (fitted by the selection like the others):

    metrics = evaluate_tower(holdout, candidate.tower, candidate.sequences, k)
    arrays = version_arrays(events, item_mask, candidate)          # what publish() writes

A neural version is the model fitted on the training part (before the holdout cutoff): no
refit on the whole history, because the tower reads the newest events anyway. Every user's
vector in the version (and in the stream afterwards) is the tower's output on their whole
history up to the snapshot, newest items included; items first seen after the cutoff have
no trained embedding and are left out of the version, as the ALS path leaves out untrained
items.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.candidates.neural import FittedNeural
from recsys.matrix import IndexedEvents
from recsys.quality import ranking_metrics
from recsys.sequence_model import UserTower, tower_queries
from recsys.sequence_train import user_sequences
from recsys.split import Holdout
from recsys.topk import rank_by_factors


def evaluate_tower(holdout: Holdout, tower: UserTower, sequences: list[list[int]], k: int,
                   known: np.ndarray | None = None) -> dict[str, float]:
    """Metrics at k of a tower whose item factors are laid out in the holdout's columns,
    each test user's vector computed from their training sequence; `known` as in
    trainer.evaluate.evaluate_factors."""
    if holdout.n_users == 0:
        return {}
    queries = tower_queries(tower, holdout.users, sequences, known)
    allowed = holdout.allowed if known is None else holdout.allowed & known
    recs = rank_by_factors(queries, tower.item_factors, k, exclude=holdout.seen,
                           allowed=allowed)
    return ranking_metrics(recs, holdout.relevant, k, holdout.n_items)


@dataclass
class VersionArrays:
    item_ids: np.ndarray  # str, the version's items (rows)
    item_factors: np.ndarray  # (n_items, d)
    user_ids: np.ndarray  # str
    user_factors: np.ndarray  # (n_users, d): the tower on each user's whole history
    tower: dict[str, np.ndarray]


def version_arrays(events: IndexedEvents, item_mask: np.ndarray, candidate: FittedNeural
                   ) -> VersionArrays:
    """The arrays of a neural version over the items `item_mask` (event columns)."""
    item_mask = np.asarray(item_mask, dtype=bool)
    item_factors = np.ascontiguousarray(candidate.model.item_factors[item_mask])
    tower = UserTower(item_factors, candidate.model.weights)
    row_of = np.full(len(item_mask), -1, dtype=np.int64)
    row_of[item_mask] = np.arange(int(item_mask.sum()))
    everything = np.ones(len(events), dtype=bool)
    sequences = user_sequences(events.rows[everything], events.cols[everything],
                               events.timestamps[everything], events.item_ids, events.shape[0])
    rows = [row_of[np.asarray(seq, dtype=np.int64)] if seq else np.zeros(0, np.int64)
            for seq in sequences]
    users = [u for u, r in enumerate(rows) if (r >= 0).any()]
    vectors = tower_queries(tower, list(range(len(users))),
                            [r[r >= 0] for r in (rows[u] for u in users)])
    return VersionArrays(
        item_ids=np.asarray(events.item_ids[item_mask]).astype(str),
        item_factors=item_factors,
        user_ids=np.asarray(events.user_ids[users]).astype(str) if users
        else np.empty(0, dtype=str),
        user_factors=vectors, tower=dict(candidate.model.weights))
