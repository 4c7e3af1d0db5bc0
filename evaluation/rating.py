"""Rating predictors for RMSE on datasets with explicit ratings (MovieLens).

The implicit ALS that ranks items does not predict stars (it fits a 0/1 preference weighted
by confidence), so its "RMSE" would mean nothing. These models fit the ratings themselves:

    GlobalMean      r^ = mu
    BiasBaseline    r^ = mu + b_u + b_i                       (Koren 2008, section 2.1)
                    b_i = sum_u (r_ui - mu - b_u) / (lambda_i + n_i)
                    b_u = sum_i (r_ui - mu - b_i) / (lambda_u + n_u)     alternated
    BiasedMF        r^ = mu + b_u + b_i + p_u . q_i           fitted by alternating least
                    squares with weighted-lambda regularisation (Zhou et al. 2008, ALS-WR):
                    [p_u; b_u] = (Qa_u^T Qa_u + lambda n_u I)^-1 Qa_u^T (r_u - mu - b_I)
                    with Qa_u = the rows [q_i, 1] of the user's items; items symmetric.

An unknown user or item contributes zero bias and a zero vector, so the prediction falls
back to the baseline; predictions are clipped to the rating scale. Pure numpy/scipy.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

RATING_RANGE = (1.0, 5.0)


def rmse(predicted: np.ndarray, actual: np.ndarray) -> float:
    predicted = np.asarray(predicted, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    if predicted.shape != actual.shape or actual.size == 0:
        raise ValueError("rmse needs two non-empty arrays of the same shape")
    return float(np.sqrt(np.mean((predicted - actual) ** 2)))


def _known(index: np.ndarray, size: int) -> np.ndarray:
    return (index >= 0) & (index < size)


def _take(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """values[index], 0 where the index is outside the fitted range (unknown user/item)."""
    index = np.asarray(index, dtype=np.int64)
    out = np.zeros(index.shape + values.shape[1:], dtype=np.float64)
    ok = _known(index, len(values))
    out[ok] = values[index[ok]]
    return out


def _columns(users: np.ndarray, items: np.ndarray, ratings: np.ndarray,
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Typed training columns and the matrix shape they span."""
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    ratings = np.asarray(ratings, dtype=np.float64)
    if not (len(users) == len(items) == len(ratings)) or len(ratings) == 0:
        raise ValueError("fit needs non-empty users, items and ratings of one length")
    return users, items, ratings, int(users.max()) + 1, int(items.max()) + 1


class GlobalMean:
    name = "global mean"

    def fit(self, users: np.ndarray, items: np.ndarray, ratings: np.ndarray) -> GlobalMean:
        self.mu = float(np.mean(ratings))
        return self

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return np.full(len(users), self.mu)


class BiasBaseline:
    name = "user/item bias"

    def __init__(self, reg_user: float = 15.0, reg_item: float = 10.0, iterations: int = 10):
        self.reg_user, self.reg_item, self.iterations = reg_user, reg_item, iterations

    def fit(self, users: np.ndarray, items: np.ndarray, ratings: np.ndarray) -> BiasBaseline:
        users, items, r, n_users, n_items = _columns(users, items, ratings)
        self.mu = float(r.mean())
        n_u = np.bincount(users, minlength=n_users)
        n_i = np.bincount(items, minlength=n_items)
        self.b_user = np.zeros(n_users)
        self.b_item = np.zeros(n_items)
        for _ in range(self.iterations):
            resid = r - self.mu - self.b_user[users]
            self.b_item = np.bincount(items, resid, n_items) / (self.reg_item + n_i)
            resid = r - self.mu - self.b_item[items]
            self.b_user = np.bincount(users, resid, n_users) / (self.reg_user + n_u)
        return self

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        pred = self.mu + _take(self.b_user, users) + _take(self.b_item, items)
        return np.clip(pred, *RATING_RANGE)


def _als_half_step(matrix: sp.csr_matrix, fixed: np.ndarray, fixed_bias: np.ndarray,
                   reg: float) -> tuple[np.ndarray, np.ndarray]:
    """Solve every row's [vector; bias] against the fixed side (one small solve per row).

    `matrix` holds residuals r - mu (rows = the side being solved); `fixed_bias` is the other
    side's bias, subtracted from each row's residuals.
    """
    n_rows, k = matrix.shape[0], fixed.shape[1]
    vectors = np.zeros((n_rows, k))
    biases = np.zeros(n_rows)
    augmented = np.hstack([fixed, np.ones((len(fixed), 1))])
    eye = np.eye(k + 1)
    for row in range(n_rows):
        lo, hi = matrix.indptr[row], matrix.indptr[row + 1]
        if hi == lo:
            continue
        cols = matrix.indices[lo:hi]
        q = augmented[cols]
        target = matrix.data[lo:hi] - fixed_bias[cols]
        solution = np.linalg.solve(q.T @ q + reg * (hi - lo) * eye, q.T @ target)
        vectors[row], biases[row] = solution[:k], solution[k]
    return vectors, biases


class BiasedMF:
    name = "biased MF (ALS-WR)"

    def __init__(self, factors: int = 20, regularization: float = 0.15, iterations: int = 12,
                 seed: int = 42) -> None:
        self.factors, self.regularization = factors, regularization
        self.iterations, self.seed = iterations, seed

    def fit(self, users: np.ndarray, items: np.ndarray, ratings: np.ndarray) -> BiasedMF:
        users, items, r, n_users, n_items = _columns(users, items, ratings)
        self.mu = float(r.mean())
        by_user = sp.csr_matrix((r - self.mu, (users, items)), shape=(n_users, n_items))
        by_item = by_user.T.tocsr()
        rng = np.random.default_rng(self.seed)
        self.q = rng.normal(0.0, 0.1, size=(n_items, self.factors))
        self.b_item = np.zeros(n_items)
        for _ in range(self.iterations):
            self.p, self.b_user = _als_half_step(by_user, self.q, self.b_item, self.regularization)
            self.q, self.b_item = _als_half_step(by_item, self.p, self.b_user, self.regularization)
        return self

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        p, q = _take(self.p, users), _take(self.q, items)
        pred = self.mu + _take(self.b_user, users) + _take(self.b_item, items) + (p * q).sum(1)
        return np.clip(pred, *RATING_RANGE)


def rating_models(seed: int = 42) -> list[GlobalMean | BiasBaseline | BiasedMF]:
    """The predictors `recsys evaluate` reports, baselines first."""
    return [GlobalMean(), BiasBaseline(), BiasedMF(seed=seed)]
