"""Invariant 1: the project's fold-in is implicit's recalculate_user (exact solver)."""

import numpy as np
import pytest
from implicit.cpu.als import AlternatingLeastSquares
from scipy.sparse import csr_matrix
from scipy.sparse import random as sparse_random

from recsys.confidence import confidence, event_weights_array
from recsys.foldin import fold_in, fold_in_batch, gram
from recsys.settings import DEFAULT_EVENT_WEIGHTS
from recsys.topk import top_k


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(7)
    counts = sparse_random(300, 120, density=0.05, random_state=rng, format="csr")
    counts.data = np.ceil(counts.data * 5)
    alpha = 3.0
    conf = counts.copy()
    conf.data = confidence(counts.data, alpha).astype(np.float32)
    # The project passes full confidences (1 + alpha * w) to implicit with its alpha left at 1.
    model = AlternatingLeastSquares(factors=16, regularization=0.1, iterations=5,
                                    use_cg=False, alpha=1.0, random_state=1)
    model.fit(conf, show_progress=False)
    return model, conf


def _relative_error(a, b):
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12)


def test_fold_in_matches_implicit_recalculate_user(fitted):
    model, conf = fitted
    yty = gram(model.item_factors)
    for user in range(0, 300, 7):
        row = conf[user]
        ours = fold_in(model.item_factors, yty, model.regularization, row.indices, row.data)
        theirs = model.recalculate_user(user, row)
        assert _relative_error(ours, theirs) < 1e-4, user


def test_batch_equals_single_and_handles_empty(fitted):
    model, conf = fitted
    yty = gram(model.item_factors)
    histories = [(conf[u].indices, conf[u].data) for u in range(20)]
    histories.append((np.array([], dtype=np.int64), np.array([])))
    batch = fold_in_batch(model.item_factors, yty, model.regularization, histories)
    for j, (idx, c) in enumerate(histories[:-1]):
        single = fold_in(model.item_factors, yty, model.regularization, idx, c)
        assert _relative_error(batch[j], single) < 1e-5
    assert not batch[-1].any()


def test_fold_in_of_a_new_user_matches_implicit(fitted):
    model, _ = fitted
    items = np.array([3, 17, 42, 99])
    weights = event_weights_array(np.array(["view", "addtocart", "rating", "transaction"]),
                                  np.array([np.nan, np.nan, 4.0, np.nan]), DEFAULT_EVENT_WEIGHTS)
    conf = confidence(weights, 2.0)
    ours = fold_in(model.item_factors, gram(model.item_factors), model.regularization, items, conf)
    row = csr_matrix((conf.astype(np.float32), (np.zeros(4, int), items)), shape=(1, 120))
    assert _relative_error(ours, model.recalculate_user(0, row)) < 1e-4


def test_top_k_partial_sort_and_exclusion():
    scores = np.array([0.1, 0.9, 0.5, 0.7, 0.3])
    assert top_k(scores, 3).tolist() == [1, 3, 2]
    assert top_k(scores, 3, exclude=np.array([1])).tolist() == [3, 2, 4]
    assert top_k(scores, 10, exclude=np.array([0, 1, 2, 3])).tolist() == [4]


@pytest.mark.parametrize("max_len", [6, 60, 200])
def test_batch_matches_single_for_mixed_lengths_and_empty_histories(fitted, max_len):
    # Lengths of every class at once: exact short ones (Woodbury), padded mid ones, long ones
    # (normal equations), empty ones, repeated lengths, in shuffled order.
    model, _ = fitted
    items = np.asarray(model.item_factors)
    yty = gram(items)
    rng = np.random.default_rng(max_len)
    lengths = [0, 1, 1, 2, 3, 0, 5, max_len, 9, 17, 33, max_len, 1, 0]
    rng.shuffle(lengths)
    histories = []
    for n in lengths:
        idx = rng.choice(min(len(items), 120), size=min(n, 120), replace=False)
        histories.append((idx, confidence(rng.integers(1, 6, size=len(idx)) * 1.0, 3.0)))
    batch = fold_in_batch(items, yty, model.regularization, histories)
    assert batch.shape == (len(histories), items.shape[1]) and batch.dtype == np.float32
    for j, (idx, c) in enumerate(histories):
        single = fold_in(items, yty, model.regularization, idx, c)
        if len(idx) == 0:
            assert not batch[j].any()
        else:
            assert _relative_error(batch[j], single) < 1e-5, (j, len(idx))
            row = csr_matrix((np.asarray(c, np.float32), (np.zeros(len(idx), int), idx)),
                             shape=(1, 120))
            assert _relative_error(batch[j], model.recalculate_user(0, row)) < 1e-4


def test_batch_of_nothing_or_only_empty_histories(fitted):
    model, _ = fitted
    yty = gram(model.item_factors)
    assert fold_in_batch(model.item_factors, yty, 0.1, []).shape == (0, 16)
    empty = (np.array([], dtype=np.int64), np.array([]))
    assert not fold_in_batch(model.item_factors, yty, 0.1, [empty, empty]).any()


def test_batch_with_confidence_below_one(fitted):
    # c - 1 < 0 (a negative weight in some configuration) is still the same maths.
    model, _ = fitted
    yty = gram(model.item_factors)
    histories = [(np.array([1, 2, 3]), np.array([0.5, 2.0, 1.0])), (np.array([4]), np.array([0.0]))]
    batch = fold_in_batch(model.item_factors, yty, model.regularization, histories)
    for j, (idx, c) in enumerate(histories):
        single = fold_in(model.item_factors, yty, model.regularization, idx, c)
        assert _relative_error(batch[j], single) < 1e-5


def test_item_fold_in_matches_implicit_recalculate_item(fitted):
    """The item half-step (recsys.foldin.fold_in_items) is implicit's recalculate_item."""
    from recsys.foldin import fold_in_items

    model, conf = fitted
    xtx = gram(model.user_factors)
    by_item = conf.T.tocsr()
    chosen = [i for i in range(0, 120, 5) if by_item[i].nnz]
    inputs = [(model.user_factors[by_item[i].indices], by_item[i].data) for i in chosen]
    ours = fold_in_items(xtx, model.regularization, inputs)
    for j, item in enumerate(chosen):
        theirs = model.recalculate_item(item, by_item[item])
        assert _relative_error(ours[j], theirs) < 1e-4, item


def test_item_fold_in_of_a_new_item_with_negative_feedback_matches_implicit(fitted):
    from recsys.foldin import fold_in_items

    model, _ = fitted
    users = np.array([2, 40, 41, 180, 250])
    conf = confidence(np.array([1.0, 3.0, -2.0, 0.5, 5.0]), 3.0).astype(np.float32)
    row = csr_matrix((conf, (np.zeros(5, dtype=int), users)), shape=(1, 300))
    ours = fold_in_items(gram(model.user_factors), model.regularization,
                         [(model.user_factors[users], conf), (np.zeros((0, 16)), np.zeros(0))])
    theirs = model.recalculate_item(0, row)
    assert _relative_error(ours[0], theirs) < 1e-4
    assert not ours[1].any()
