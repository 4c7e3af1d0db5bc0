"""Full ALS fit with implicit (CPU), on full confidences.

implicit's own `alpha` stays 1.0: the matrix already holds c = 1 + alpha * w, computed by
recsys.confidence exactly as the stream worker computes it, so both sides use one rule.
The process entry point sets OPENBLAS_NUM_THREADS=1 before numpy is imported (implicit's
own threads do the parallel work; a threaded BLAS underneath them oversubscribes the cores);
`threadpool_limits` below enforces it again in case numpy was loaded first.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from trainer.errors import NonFiniteFactors, NotEnoughData

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AlsParams:
    factors: int
    regularization: float
    iterations: int
    alpha: float
    seed: int = 42
    threads: int = 0  # 0 = implicit's default (all cores)


@dataclass
class Factors:
    user_factors: np.ndarray  # float32 (n_users, k)
    item_factors: np.ndarray  # float32 (n_items, k)
    seconds: float = 0.0


def check_finite(factors: Factors) -> Factors:
    for name in ("user_factors", "item_factors"):
        matrix = getattr(factors, name)
        bad = int(np.size(matrix) - np.isfinite(matrix).sum())
        if bad:
            raise NonFiniteFactors(f"{name} contain {bad} NaN/Inf values; not publishing")
    return factors


def make_model(params: AlsParams, iterations: int | None = None):  # noqa: ANN201 - implicit type
    from implicit.cpu.als import AlternatingLeastSquares

    return AlternatingLeastSquares(
        factors=params.factors, regularization=params.regularization, alpha=1.0,
        iterations=params.iterations if iterations is None else iterations,
        random_state=params.seed, num_threads=params.threads, dtype=np.float32,
    )


def fit_als(conf: sp.csr_matrix, params: AlsParams, init: Factors | None = None,
            iterations: int | None = None) -> Factors:
    """Fit on C (users x items, full confidences). With `init`, continue from those factors
    (same shape) instead of a random start: a warm-started refit needs few iterations."""
    if conf.nnz == 0:
        raise NotEnoughData("the confidence matrix is empty")
    model = make_model(params, iterations)
    if init is not None:
        if init.user_factors.shape != (conf.shape[0], params.factors) or \
                init.item_factors.shape != (conf.shape[1], params.factors):
            raise ValueError("warm-start factors do not match the matrix shape")
        model.user_factors = np.array(init.user_factors, dtype=np.float32, copy=True)
        model.item_factors = np.array(init.item_factors, dtype=np.float32, copy=True)
    started = time.perf_counter()
    with threadpool_limits(limits=1, user_api="blas"):
        model.fit(sp.csr_matrix(conf, dtype=np.float32), show_progress=False)
    seconds = time.perf_counter() - started
    log.info("ALS fit: %d users x %d items, %d nonzeros, k=%d, %d iterations in %.2fs",
             conf.shape[0], conf.shape[1], conf.nnz, params.factors, model.iterations, seconds)
    return check_finite(Factors(np.asarray(model.user_factors, dtype=np.float32),
                                np.asarray(model.item_factors, dtype=np.float32), seconds))
