"""/because maths: contributions recomputed from the fold-in formula, and their sum."""

import numpy as np
import pytest
from implicit.cpu.als import AlternatingLeastSquares
from scipy.sparse import csr_matrix
from scipy.sparse import random as sparse_random

from recsys.confidence import confidence
from recsys.explain import contributions, explain, implied_confidences
from recsys.foldin import fold_in, gram


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(11)
    counts = sparse_random(200, 90, density=0.06, random_state=rng, format="csr")
    counts.data = np.ceil(counts.data * 5)
    conf = counts.copy()
    conf.data = confidence(counts.data, 2.0).astype(np.float32)
    model = AlternatingLeastSquares(factors=12, regularization=0.1, iterations=4,
                                    use_cg=False, alpha=1.0, random_state=3)
    model.fit(conf, show_progress=False)
    return np.asarray(model.item_factors, dtype=np.float64), 0.1


def _by_the_formula(y, reg, target, rows, conf):
    """c_j y_i^T A^-1 y_j with A built and inverted explicitly, item by item."""
    a = y.T @ y + reg * np.eye(y.shape[1])
    for row, c in zip(rows, conf, strict=True):
        a += (c - 1.0) * np.outer(y[row], y[row])
    inverse = np.linalg.inv(a)
    return np.array([c * y[target] @ inverse @ y[row] for row, c in zip(rows, conf, strict=True)])


def test_contributions_equal_the_formula_and_sum_to_the_fold_in_score(fitted):
    y, reg = fitted
    rng = np.random.default_rng(5)
    yty = gram(y)
    for _ in range(20):
        rows = rng.choice(len(y), size=int(rng.integers(1, 30)), replace=False)
        conf = 1.0 + 2.0 * rng.integers(1, 6, size=len(rows))
        target = int(rng.integers(len(y)))
        ours = contributions(y, yty, reg, target, rows, conf)
        np.testing.assert_allclose(ours, _by_the_formula(y, reg, target, rows, conf),
                                   rtol=1e-8, atol=1e-10)
        x = fold_in(y, yty, reg, rows, conf)
        score = float(y[target] @ x)
        assert abs(ours.sum() - score) <= 1e-4 * max(1.0, abs(score))


def test_implied_confidences_recover_the_fold_in_confidences_when_at_most_k_items(fitted):
    y, reg = fitted
    yty = gram(y)
    rng = np.random.default_rng(8)
    for n in (1, 3, 7, y.shape[1]):
        rows = rng.choice(len(y), size=n, replace=False)
        conf = 1.0 + 2.0 * rng.integers(1, 6, size=n)
        x = np.linalg.solve(yty + reg * np.eye(y.shape[1]) + (y[rows].T * (conf - 1)) @ y[rows],
                            y[rows].T @ conf)  # the fold-in in float64
        implied, residual = implied_confidences(y, yty, reg, rows, x)
        np.testing.assert_allclose(implied, conf, rtol=1e-5)
        assert residual < 1e-8


def test_explain_with_more_items_than_factors_still_sums_to_the_score(fitted):
    y, reg = fitted
    yty = gram(y)
    rng = np.random.default_rng(9)
    rows = rng.choice(len(y), size=3 * y.shape[1], replace=False)
    conf = 1.0 + 2.0 * rng.integers(1, 6, size=len(rows))
    x = fold_in(y, yty, reg, rows, conf)
    target = int(rng.integers(len(y)))
    result = explain(y, yty, reg, target, rows, x)
    assert sorted(result.rows.tolist()) == sorted(rows.tolist())
    assert np.all(np.diff(result.contributions) <= 0)  # largest first
    assert result.residual < 1e-4
    assert abs(result.contributions.sum() - result.score) <= 1e-4 * max(1.0, abs(result.score))


def test_a_vector_that_is_not_a_fold_in_over_the_items_shows_a_residual(fitted):
    y, reg = fitted
    yty = gram(y)
    rows = np.array([1, 2])
    x = np.random.default_rng(1).normal(size=y.shape[1])  # unrelated to rows 1 and 2
    _, residual = implied_confidences(y, yty, reg, rows, x)
    assert residual > 0.1


def test_empty_history():
    y = np.eye(3)
    assert len(contributions(y, gram(y), 0.1, 0, np.array([], dtype=int), np.array([]))) == 0
    conf, residual = implied_confidences(y, gram(y), 0.1, np.array([], dtype=int), np.ones(3))
    assert len(conf) == 0 and residual == 0.0




def test_contributions_equal_implicits_explain():
    """implicit's own `explain` (Hu et al. section 5) computes the same terms."""
    rng = np.random.default_rng(21)
    counts = sparse_random(60, 40, density=0.15, random_state=rng, format="csr")
    counts.data = np.ceil(counts.data * 5)
    conf = counts.copy()
    conf.data = confidence(counts.data, 2.0).astype(np.float32)
    model = AlternatingLeastSquares(factors=6, regularization=0.2, iterations=3,
                                    use_cg=False, alpha=1.0, random_state=4)
    model.fit(conf, show_progress=False)
    y = np.asarray(model.item_factors, dtype=np.float64)
    for user in range(0, 60, 9):
        row = conf[user]
        if not row.nnz:
            continue
        total, top, _ = model.explain(user, conf, itemid=5, N=row.nnz)
        ours = contributions(y, gram(y), 0.2, 5, row.indices, row.data)
        assert float(ours.sum()) == pytest.approx(total, rel=1e-4, abs=1e-6)
        theirs = dict((item, score) for item, score in top)
        for item, value in zip(row.indices.tolist(), ours.tolist(), strict=True):
            assert value == pytest.approx(theirs[item], rel=1e-3, abs=1e-6)


def test_contributions_with_negative_feedback_equal_implicits_explain():
    """A negative confidence (dislike) has preference 0: no contribution, but it shapes A."""
    rng = np.random.default_rng(22)
    dense = rng.integers(-2, 4, size=(50, 30)) * (rng.random((50, 30)) < 0.25)
    conf = csr_matrix(np.asarray(confidence(dense.astype(float), 2.0) * (dense != 0),
                                 dtype=np.float32))
    conf.eliminate_zeros()
    model = AlternatingLeastSquares(factors=5, regularization=0.2, iterations=3,
                                    use_cg=False, alpha=1.0, random_state=4)
    model.fit(conf, show_progress=False)
    y = np.asarray(model.item_factors, dtype=np.float64)
    checked = 0
    for user in range(50):
        row = conf[user]
        if not (row.data < 0).any() or not (row.data > 0).any():
            continue
        total, top, _ = model.explain(user, conf, itemid=3, N=row.nnz)
        ours = contributions(y, gram(y), 0.2, 3, row.indices, row.data)
        assert float(ours.sum()) == pytest.approx(total, rel=1e-4, abs=1e-6)
        assert np.all(ours[row.data < 0] == 0)
        x = fold_in(y, gram(y), 0.2, row.indices, row.data)
        assert float(ours.sum()) == pytest.approx(float(y[3] @ x), rel=1e-3, abs=1e-5)
        checked += 1
    assert checked >= 3


def test_explain_with_disliked_items_recovers_their_confidences_and_gives_them_nothing(fitted):
    y, reg = fitted
    yty = gram(y)
    rows = np.array([3, 8, 15, 22, 40])
    conf = np.array([5.0, -9.0, 3.0, -3.0, 11.0])  # two dislikes
    x = fold_in(y, yty, reg, rows, conf)
    implied, residual = implied_confidences(y, yty, reg, rows, x, negative=conf < 0)
    np.testing.assert_allclose(implied, conf, rtol=1e-3)
    assert residual < 1e-4
    result = explain(y, yty, reg, 7, rows, x, negative=conf < 0)
    by_row = dict(zip(result.rows.tolist(), result.contributions.tolist(), strict=True))
    assert by_row[8] == 0 and by_row[22] == 0
    assert sum(by_row.values()) == pytest.approx(float(y[7] @ x), rel=1e-3, abs=1e-5)
    np.testing.assert_allclose(
        [by_row[r] for r in rows], contributions(y, yty, reg, 7, rows, conf), rtol=1e-3,
        atol=1e-6)
