"""The neural user tower (recsys.sequence_model, trained by recsys.sequence_train) as a
candidate: next-item prediction over each user's item sequence.

The weight matrix a candidate is fitted on has lost the order of events, so this candidate
also reads `FitContext.sequences` (per user row, the training items oldest first): a fit
keeps of each sequence the items its matrix holds, so the validation carve's fit part gives
the fit part's sequences. Ranking runs each holdout user's sequence through the tower, as
the stream does once the version is published.

Skipped (with the reason on the leaderboard and a log line) when PyTorch, the optional
`neural` extra, is not installed, and when no sequences are given. No search space: one fit
costs minutes where the other candidates cost seconds, so its start point (the `neural_*`
settings) is all the selection scores. Its training stops at the selection's deadline
(`FitContext.deadline`) or `neural_time_budget_s`, whichever comes first, after at least
one epoch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.candidates.base import KIND_NEURAL, CandidateSpec, Export, FitContext
from recsys.candidates.popularity import item_popularity
from recsys.candidates.registry import register
from recsys.sequence_model import UserTower, tower_queries
from recsys.sequence_train import (
    NeuralModel,
    NeuralParams,
    NeuralUnavailable,
    fit_neural,
    import_torch,
)
from recsys.split import Holdout
from recsys.topk import rank_by_factors

log = logging.getLogger(__name__)

NO_TORCH = "PyTorch is not installed (pip install '.[neural]')"
NO_ORDER = "no event order given (FitContext.sequences)"


@dataclass
class FittedNeural:
    model: NeuralModel
    sequences: list[list[int]]  # per user row: the item columns it was trained on, in order
    popularity: np.ndarray
    params: dict[str, Any]
    name: str = "neural"
    kind: str = KIND_NEURAL

    @property
    def tower(self) -> UserTower:
        return self.model.tower()

    @property
    def seconds(self) -> float:
        return self.model.seconds

    def rank(self, holdout: Holdout, k: int) -> np.ndarray:
        queries = tower_queries(self.tower, holdout.users, self.sequences)
        return rank_by_factors(queries, self.model.item_factors, k, exclude=holdout.exclude,
                               allowed=holdout.allowed)

    def export(self) -> Export:
        p = self.model.params
        return Export(kind=self.kind, item_scores=self.popularity,
                      item_factors=self.model.item_factors, tower=dict(self.model.weights),
                      manifest={"factors": p.dim, "window": p.window, "hidden": p.hidden,
                                "epochs_run": self.model.epochs_run})


def restrict(sequences: Sequence[Sequence[int]], matrix: sp.csr_matrix) -> list[list[int]]:
    """Each user row's sequence without the items its row of `matrix` does not hold."""
    out: list[list[int]] = []
    indptr, indices = matrix.indptr, matrix.indices
    for user in range(matrix.shape[0]):
        row = indices[indptr[user]:indptr[user + 1]]
        seq = sequences[user] if user < len(sequences) else ()
        if len(row) == 0 or len(seq) == 0:
            out.append([])
            continue
        cols = np.asarray(seq, dtype=np.int64)
        out.append(cols[np.isin(cols, row)].tolist())
    return out


def skip(shape: tuple[int, int], ctx: FitContext) -> str | None:
    try:
        import_torch()
    except NeuralUnavailable:
        log.info("candidate neural skipped: %s", NO_TORCH)
        return NO_TORCH
    if ctx.sequences is None:
        log.info("candidate neural skipped: %s", NO_ORDER)
        return NO_ORDER
    return None


def fit(train: sp.csr_matrix, params: Mapping[str, Any], ctx: FitContext) -> FittedNeural:
    import_torch()  # without it: NeuralUnavailable, which names the extra
    if ctx.sequences is None:
        raise ValueError(f"neural not applicable: {NO_ORDER}")
    base = ctx.neural if ctx.neural is not None else NeuralParams(seed=ctx.seed,
                                                                  threads=ctx.threads)
    p = replace(base, **dict(params))
    if ctx.deadline is not None:
        # the selection's budget bounds this fit too (fit_neural ends after at least one epoch)
        p = replace(p, time_budget_s=max(0.0, min(p.time_budget_s,
                                                  ctx.deadline - time.perf_counter())))
    sequences = restrict(ctx.sequences, train)
    model = fit_neural(sequences, train.shape[1], p)
    return FittedNeural(model, sequences, item_popularity(train), dict(params))


register(CandidateSpec(name="neural", kind=KIND_NEURAL, fit=fit, defaults={}, skip=skip,
                       description="SASRec-style user tower over each user's newest items "
                       "(needs the `neural` extra)"))
