"""Popularity: distinct training users per item (recsys.baselines), the floor."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.candidates.base import KIND_POPULARITY, CandidateSpec, Export, FitContext
from recsys.candidates.registry import register
from recsys.split import Holdout
from recsys.topk import rank_by_scores


def item_popularity(train: sp.csr_matrix) -> np.ndarray:
    """Distinct users per item, ties broken by the summed weight (scaled into (0, 1)), as
    recsys.baselines.PopularityRecommender counts them."""
    train = sp.csr_matrix(train)
    users = np.bincount(train.indices, minlength=train.shape[1]).astype(np.float64)
    total = np.bincount(train.indices, weights=train.data, minlength=train.shape[1])
    top = total.max(initial=0.0)
    return users + (total / (top + 1.0) if top > 0 else 0.0)


@dataclass
class FittedPopularity:
    scores: np.ndarray
    seconds: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)
    name: str = "popularity"
    kind: str = KIND_POPULARITY

    def rank(self, holdout: Holdout, k: int) -> np.ndarray:
        return rank_by_scores(self.scores, holdout.n_users, k, exclude=holdout.exclude,
                              allowed=holdout.allowed)

    def export(self) -> Export:
        return Export(kind=self.kind, item_scores=self.scores)


def fit(train: sp.csr_matrix, params: Mapping[str, Any], ctx: FitContext) -> FittedPopularity:
    started = time.perf_counter()
    return FittedPopularity(item_popularity(train), time.perf_counter() - started)


register(CandidateSpec(name="popularity", kind=KIND_POPULARITY, fit=fit, defaults={},
                       description="distinct training users per item; the floor"))
