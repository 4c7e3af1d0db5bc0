"""Pure pieces of the trainer: confidence matrix, fit guard, gate decision, similar items."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.als import AlsParams, Factors, check_finite, fit_als
from recsys.errors import ModelIntegrityError, NonFiniteFactors, NotEnoughData
from recsys.matrix import MS_PER_DAY, confidence_matrix, index_events
from recsys.modelstore import pack_similar, unpack_similar
from recsys.neighbours import cosine_neighbour_lists
from recsys.settings import DEFAULT_EVENT_WEIGHTS
from recsys.sources import make_frame
from trainer.gate import decide
from trainer.publish import encode_similar

T0 = 1_700_000_000_000


def test_confidence_is_one_plus_alpha_times_summed_weights_with_optional_decay():
    frame = make_frame(user_id=["a", "a", "a", "b", "b"], item_id=["x", "x", "y", "x", "y"],
                       event_type=["view", "transaction", "rating", "addtocart", "view"],
                       value=[None, None, 4.0, None, None],
                       timestamp=[T0, T0, T0, T0, T0 + 10 * MS_PER_DAY])
    events = index_events(frame, DEFAULT_EVENT_WEIGHTS)
    conf = confidence_matrix(events, alpha=2.0).toarray()
    a, b = list(events.user_ids).index("a"), list(events.user_ids).index("b")
    x, y = list(events.item_ids).index("x"), list(events.item_ids).index("y")
    assert conf[a, x] == pytest.approx(1 + 2 * (1.0 + 8.0))
    assert conf[a, y] == pytest.approx(1 + 2 * (1.0 * 4 / 5))  # rating r -> r / 5
    assert conf[b, x] == pytest.approx(1 + 2 * 4.0)
    # half-life 10 days: b's add-to-cart is 10 days older than the newest event
    decayed = confidence_matrix(index_events(frame, DEFAULT_EVENT_WEIGHTS, 10.0), 2.0)
    assert decayed.toarray()[b, x] == pytest.approx(1 + 2 * 4.0 * 0.5)
    # a zero weight removes the pair instead of storing a positive with confidence 1
    silent = index_events(frame, {**DEFAULT_EVENT_WEIGHTS, "view": 0.0})
    assert confidence_matrix(silent, 2.0).toarray()[b, y] == 0.0


def test_fit_refuses_nan_and_empty_input_and_keeps_empty_rows_zero():
    nan = np.full((2, 3), np.nan, dtype=np.float32)
    with pytest.raises(NonFiniteFactors):
        check_finite(Factors(np.zeros((2, 3), np.float32), nan))
    import scipy.sparse as sp

    params = AlsParams(factors=4, regularization=1.0, iterations=3, alpha=1.0, threads=1)
    with pytest.raises(NotEnoughData):
        fit_als(sp.csr_matrix((3, 3), dtype=np.float32), params)
    conf = sp.csr_matrix(np.array([[2, 0, 3, 0], [0, 0, 0, 0], [4, 5, 0, 0]], np.float32))
    fitted = fit_als(conf, params)
    assert fitted.user_factors.shape == (3, 4) and fitted.item_factors.shape == (4, 4)
    assert not fitted.user_factors[1].any() and not fitted.item_factors[3].any()
    warm = fit_als(conf, params, init=fitted, iterations=1)
    assert np.isfinite(warm.item_factors).all()


def test_gate_decision():
    pop = {"ndcg@10": 0.10}
    assert decide("ndcg@10", 0.02, {"ndcg@10": 0.2}, None, pop).publish
    ok = decide("ndcg@10", 0.02, {"ndcg@10": 0.196}, {"ndcg@10": 0.2}, pop)
    assert ok.publish and ok.beats_popularity  # 0.196 >= 0.98 * 0.2
    worse = decide("ndcg@10", 0.02, {"ndcg@10": 0.195}, {"ndcg@10": 0.2}, pop)
    assert not worse.publish and "0.195" in worse.reason
    weak = decide("ndcg@10", 0.02, {"ndcg@10": 0.09}, {"ndcg@10": 0.08}, pop)
    assert weak.publish and not weak.beats_popularity  # better than serving, flagged
    blind = decide("ndcg@10", 0.02, {}, {"ndcg@10": 0.2}, pop)
    assert not blind.publish


def test_similar_items_are_cosine_neighbours_without_the_item_itself():
    rng = np.random.default_rng(0)
    factors = rng.standard_normal((40, 6)).astype(np.float32)
    unit = factors / np.linalg.norm(factors, axis=1, keepdims=True)
    cosine = unit @ unit.T
    np.fill_diagonal(cosine, -np.inf)
    rows = np.array([3, 17])
    idx, scores = cosine_neighbour_lists(factors, 5, rows)
    assert idx.tolist() == np.argsort(-cosine[rows], axis=1)[:, :5].tolist()
    assert scores == pytest.approx(np.sort(cosine[rows], axis=1)[:, ::-1][:, :5], abs=1e-5)
    ids = np.array([f"item-{i}" for i in range(40)])
    encoded = encode_similar(ids, rows, idx, scores)
    assert set(encoded) == {"item-3", "item-17"}
    neighbours, stored = unpack_similar(encoded["item-3"], len(ids))
    assert neighbours.tolist() == idx[0].tolist() and stored.tolist() == scores[0].tolist()
    # a short list (-1 padding at the end of a row) keeps only its real neighbours
    short = encode_similar(ids, rows[:1], np.array([[4, 9, -1, -1]]),
                           np.array([[0.9, 0.5, 0.0, 0.0]], dtype=np.float32))
    assert unpack_similar(short["item-3"], len(ids))[0].tolist() == [4, 9]
    assert unpack_similar(pack_similar(np.array([4, 99]), np.array([0.9, 0.5])), 40)[0] \
        .tolist() == [4]  # a row outside the version's items is dropped
    with pytest.raises(ModelIntegrityError):
        unpack_similar(b"\x00" * 7, 40)


def test_pruned_top_k_is_exact_on_a_large_catalogue():
    """top_k_rows prunes to a few candidate columns when the catalogue is large: the result
    must be the full sort's, -inf (excluded) scores included, with the matching scores."""
    from recsys.topk import top_k_rows

    rng = np.random.default_rng(5)
    scores = rng.standard_normal((40, 5003)).astype(np.float32)  # 5003: a ragged last group
    scores[3, :4990] = -np.inf  # fewer finite scores than k in the main groups
    scores[7, rng.choice(5003, 4000, replace=False)] = -np.inf
    for k in (1, 10, 50):
        idx, best = top_k_rows(scores, k, return_scores=True)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        expect = np.where(np.isfinite(np.take_along_axis(scores, order, axis=1)), order, -1)
        assert idx.tolist() == expect.tolist()
        assert best == pytest.approx(np.where(expect >= 0, np.take_along_axis(
            scores, np.maximum(expect, 0), axis=1), 0.0))


def test_category_weights_equal_the_per_event_rule():
    import pandas as pd

    from recsys.confidence import event_weights_array
    from recsys.matrix import event_weights_of

    types = ["view", "rating", "transaction", "rating", "addtocart", "click", "view"]
    values = np.array([np.nan, 4.0, 2.0, np.nan, 1.0, np.nan, 3.0])
    expect = event_weights_array(np.array(types), values, DEFAULT_EVENT_WEIGHTS)
    got = event_weights_of(pd.Series(types, dtype="category"), values, DEFAULT_EVENT_WEIGHTS)
    assert got == pytest.approx(expect)
    assert event_weights_of(pd.Series(types), values, DEFAULT_EVENT_WEIGHTS) == \
        pytest.approx(expect)


def test_partial_refit_updates_changed_users_and_all_items_only():
    import scipy.sparse as sp

    from recsys.als import refit_als

    rng = np.random.default_rng(2)
    dense = (rng.random((30, 12)) < 0.3) * (1 + rng.integers(1, 5, (30, 12)))
    dense[:, 11] = 0
    part = sp.csr_matrix(dense.astype(np.float32))
    dense[[4, 9], 11] = 3  # users 4 and 9 touch item 11, new in the whole matrix
    params = AlsParams(factors=4, regularization=1.0, iterations=5, alpha=1.0, threads=1)
    fitted = fit_als(part, params)
    assert not fitted.item_factors[11].any()
    refitted = refit_als(sp.csr_matrix(dense.astype(np.float32)), params, fitted,
                         np.array([4, 9]))
    unchanged = np.setdiff1d(np.arange(30), [4, 9])
    assert (refitted.user_factors[unchanged] == fitted.user_factors[unchanged]).all()
    assert not np.allclose(refitted.user_factors[[4, 9]], fitted.user_factors[[4, 9]])
    assert refitted.item_factors[11].any() and np.isfinite(refitted.item_factors).all()


def test_similar_lists_of_an_item_item_model_keep_positive_neighbours_best_first():
    from trainer.pipeline import similar_from_neighbours

    rows = np.array([[3, 1, -1, 2], [0, 2, 3, -1]], dtype=np.int32)  # -1: no neighbour
    weights = np.array([[0.2, 0.9, 0.0, -0.5], [0.0, 0.1, 0.4, 0.0]], dtype=np.float32)
    idx, scores = similar_from_neighbours(rows, weights, n=3, which=np.array([1, 0]))
    assert idx.tolist() == [[3, 2, -1], [1, 3, -1]]  # item 0's weight 0 and -0.5 left out
    np.testing.assert_allclose(scores, [[0.4, 0.1, 0.0], [0.9, 0.2, 0.0]])
    assert idx.dtype == np.int64 and scores.dtype == np.float32


def test_stored_similar_lists_go_to_the_most_popular_items_when_capped():
    from types import SimpleNamespace

    from trainer.pipeline import Trainer

    ids = np.array(["a", "b", "c", "d", "e"])
    popularity = {"a": 1.0, "b": 9.0, "d": 5.0, "e": 7.0}  # c: never seen
    capped = SimpleNamespace(settings=SimpleNamespace(trainer_similar_max_items=3))
    assert Trainer._similar_rows(capped, ids, popularity).tolist() == [1, 3, 4]  # rows, sorted
    uncapped = SimpleNamespace(settings=SimpleNamespace(trainer_similar_max_items=0))
    assert Trainer._similar_rows(uncapped, ids, popularity).tolist() == [0, 1, 2, 3, 4]
