"""ALS (implicit, recsys.als) on confidences 1 + alpha * w; users folded in to rank.

Ranking folds each holdout user in from their training items (recsys.foldin, the stream
worker's maths) against the fitted item factors, as the model is used once published.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.als import AlsParams, Factors, fit_als
from recsys.candidates.base import KIND_ALS, CandidateSpec, Export, FitContext
from recsys.candidates.popularity import item_popularity
from recsys.candidates.registry import register
from recsys.confidence import confidence
from recsys.holdout_eval import fold_in_users
from recsys.spark_als import fit_als_spark
from recsys.split import Holdout
from recsys.topk import rank_by_factors

DEFAULTS = {"factors": 64, "regularization": 50.0, "alpha": 10.0, "iterations": 15}
SPACE = {
    "factors": (16, 32, 64, 128),
    "regularization": (0.1, 1.0, 5.0, 20.0, 50.0, 100.0, 200.0),
    "alpha": (1.0, 2.0, 5.0, 10.0, 20.0, 40.0),
    "iterations": (10, 15, 25),
}


def als_params(params: Mapping[str, Any], ctx: FitContext) -> AlsParams:
    p = {**DEFAULTS, **params}
    return AlsParams(factors=int(p["factors"]), regularization=float(p["regularization"]),
                     iterations=int(p["iterations"]), alpha=float(p["alpha"]), seed=ctx.seed,
                     threads=ctx.threads)


def confidences(weights: sp.csr_matrix, alpha: float) -> sp.csr_matrix:
    """recsys.matrix.confidence_matrix's rule on a summed-weight matrix."""
    conf = sp.csr_matrix(weights, dtype=np.float32, copy=True)
    conf.data = np.asarray(confidence(np.asarray(weights.data, np.float64), alpha), np.float32)
    return conf


@dataclass
class FittedAls:
    als: AlsParams
    factors: Factors
    popularity: np.ndarray
    params: dict[str, Any]
    name: str = "als"
    kind: str = KIND_ALS
    backend: str = "implicit"  # what fitted the factors: implicit, or spark (MLlib)

    @property
    def seconds(self) -> float:
        return self.factors.seconds

    def rank(self, holdout: Holdout, k: int) -> np.ndarray:
        conf = replace(holdout, seen_values=np.asarray(
            confidence(np.asarray(holdout.seen_values, np.float64), self.als.alpha), np.float32))
        users = fold_in_users(conf, self.factors.item_factors, self.als.regularization)
        return rank_by_factors(users, self.factors.item_factors, k, exclude=holdout.exclude,
                               allowed=holdout.allowed)

    def export(self) -> Export:
        p = self.als
        return Export(kind=self.kind, item_scores=self.popularity,
                      item_factors=self.factors.item_factors,
                      user_factors=self.factors.user_factors,
                      manifest={"factors": p.factors, "regularization": p.regularization,
                                "alpha": p.alpha, "iterations": p.iterations,
                                "fit_backend": self.backend})


def fit(train: sp.csr_matrix, params: Mapping[str, Any], ctx: FitContext) -> FittedAls:
    p = als_params(params, ctx)
    conf = confidences(train, p.alpha)
    # the same confidences either way; only the solver's engine differs (recsys.spark_als)
    factors = fit_als(conf, p) if ctx.spark is None else fit_als_spark(conf, p, ctx.spark)
    return FittedAls(p, factors, item_popularity(train),
                     {"factors": p.factors, "regularization": p.regularization,
                      "alpha": p.alpha, "iterations": p.iterations},
                     backend="implicit" if ctx.spark is None else "spark")


register(CandidateSpec(name="als", kind=KIND_ALS, fit=fit, defaults=DEFAULTS, space=SPACE,
                       description="implicit ALS; users folded in by the stream"))
