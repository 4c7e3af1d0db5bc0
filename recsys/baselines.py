"""The popularity recommender: the floor every personalised model has to beat.

Each item's score is the number of distinct training users who interacted with it (ties
broken by the summed event weight when given), the same list for everybody minus what the
user already has. Counting users rather than events keeps one very active user from making
an item "popular".
"""

from __future__ import annotations

import numpy as np

from recsys.quality import UserItems, unique_sorted
from recsys.topk import rank_by_scores


class PopularityRecommender:
    def __init__(self, n_items: int) -> None:
        self.n_items = n_items
        self.scores = np.zeros(n_items, dtype=np.float64)

    def fit(self, user_rows: np.ndarray, item_cols: np.ndarray,
            weights: np.ndarray | None = None) -> PopularityRecommender:
        """Fit from (user, item[, weight]) pairs; duplicate pairs count once for the users."""
        users = np.asarray(user_rows, dtype=np.int64)
        items = np.asarray(item_cols, dtype=np.int64)
        width = int(users.max()) + 1 if len(users) else 1
        distinct_items = unique_sorted(items * width + users) // width  # one entry per pair
        distinct_users = np.bincount(distinct_items, minlength=self.n_items).astype(np.float64)
        if weights is not None and len(items):
            total = np.bincount(items, weights=np.asarray(weights, np.float64),
                                minlength=self.n_items)
            # scaled into (0, 1) so that it only ever breaks ties between user counts
            distinct_users += total / (total.max() + 1.0) if total.max() > 0 else 0.0
        self.scores = distinct_users
        return self

    def recommend(self, n_users: int, k: int, exclude: UserItems | None = None,
                  allowed: np.ndarray | None = None) -> np.ndarray:
        return rank_by_scores(self.scores, n_users, k, exclude, allowed)
