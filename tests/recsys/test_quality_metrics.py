"""Ranking metrics against values computed by hand."""

import math

import numpy as np
import pytest

from recsys.quality import (
    UserItems,
    catalog_coverage,
    hits,
    ranking_metrics,
)
from recsys.topk import rank_by_factors, rank_by_scores, top_k_rows

# user 0: relevant {1, 3, 5}; recommended [1, 2, 3]       -> hits at ranks 1 and 3
# user 1: relevant {4};       recommended [0, 4, -1 (pad)] -> hit at rank 2
# user 2: relevant {9, 8};    recommended [7, 6, 0]         -> no hit
RECS = np.array([[1, 2, 3], [0, 4, -1], [7, 6, 0]])
REL = UserItems.from_lists([[1, 3, 5], [4], [9, 8]])


def test_hits_marks_relevant_positions_and_ignores_padding():
    assert hits(RECS, REL).tolist() == [[True, False, True], [False, True, False],
                                        [False, False, False]]


def test_every_metric_by_hand():
    m = ranking_metrics(RECS, REL, k=3, n_items=10)
    assert m["precision@3"] == pytest.approx((2 / 3 + 1 / 3 + 0) / 3)
    assert m["recall@3"] == pytest.approx((2 / 3 + 1 / 1 + 0) / 3)
    f1_u0 = 2 * (2 / 3) * (2 / 3) / (4 / 3)
    f1_u1 = 2 * (1 / 3) * 1 / (1 / 3 + 1)
    assert m["f1@3"] == pytest.approx((f1_u0 + f1_u1 + 0) / 3)
    # AP: user 0 = (1/1 + 2/3) / min(3, 3); user 1 = (1/2) / min(3, 1)
    assert m["map@3"] == pytest.approx(((1 + 2 / 3) / 3 + 0.5 + 0) / 3)
    d = [1 / math.log2(r + 1) for r in (1, 2, 3)]
    ndcg_u0 = (d[0] + d[2]) / (d[0] + d[1] + d[2])
    ndcg_u1 = d[1] / d[0]
    assert m["ndcg@3"] == pytest.approx((ndcg_u0 + ndcg_u1 + 0) / 3)
    assert m["hit_rate@3"] == pytest.approx(2 / 3)
    assert m["coverage@3"] == pytest.approx(len({0, 1, 2, 3, 4, 6, 7}) / 10)


def test_metrics_at_smaller_k_use_the_prefix():
    m = ranking_metrics(RECS, REL, k=1, n_items=10)
    assert m["precision@1"] == pytest.approx(1 / 3)
    assert m["ndcg@1"] == pytest.approx(1 / 3)
    assert m["recall@1"] == pytest.approx((1 / 3) / 3)


def test_perfect_ranking_scores_one():
    rel = UserItems.from_lists([[2, 0], [1]])
    recs = np.array([[0, 2], [1, -1]])
    m = ranking_metrics(recs, rel, k=2, n_items=3)
    assert m["ndcg@2"] == pytest.approx(1.0)
    assert m["map@2"] == pytest.approx(1.0)
    assert m["recall@2"] == pytest.approx(1.0)
    assert m["precision@2"] == pytest.approx((1 + 0.5) / 2)


def test_coverage_counts_distinct_items_only():
    assert catalog_coverage(np.array([[1, 1], [1, -1]]), n_items=4) == pytest.approx(0.25)


def test_mismatched_rows_are_refused():
    with pytest.raises(ValueError):
        hits(RECS[:2], REL)


def test_top_k_rows_best_first_and_pads_excluded():
    scores = np.array([[0.1, 0.9, -np.inf, 0.5], [-np.inf, -np.inf, 2.0, -np.inf]])
    assert top_k_rows(scores, 3).tolist() == [[1, 3, 0], [2, -1, -1]]


def test_ranking_excludes_each_users_own_items_and_disallowed_items():
    users = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    items = np.array([[3, 0.5], [2, 0], [1, 0], [0, 3], [0, 2]], dtype=np.float32)
    exclude = UserItems.from_lists([[0], [3]])
    allowed = np.array([True, True, False, True, True])
    recs = rank_by_factors(users, items, 2, exclude=exclude, allowed=allowed)
    assert recs.tolist() == [[1, 3], [4, 0]]
    pop = rank_by_scores(np.array([5.0, 4.0, 3.0, 2.0, 1.0]), 2, 2, exclude=exclude)
    assert pop.tolist() == [[1, 2], [0, 1]]


def test_factor_ranking_agrees_with_the_dense_reference():
    """rank_by_factors (implicit's top-k) == rank (numpy, dense blocks) on random data."""
    from recsys.topk import rank

    rng = np.random.default_rng(3)
    users = rng.standard_normal((50, 8)).astype(np.float32)
    items = rng.standard_normal((300, 8)).astype(np.float32)
    exclude = UserItems.from_lists([rng.choice(300, rng.integers(0, 40), replace=False)
                                    for _ in range(50)])
    allowed = rng.random(300) > 0.2
    fast = rank_by_factors(users, items, 10, exclude=exclude, allowed=allowed)
    dense = rank(lambda a, b: users[a:b] @ items.T, 50, 300, 10, exclude, allowed)
    assert (fast == dense).all()
    # one heavy user among many light ones: over-fetching misses, the dense path takes over
    many = rng.standard_normal((200, 8)).astype(np.float32)
    lists = [rng.choice(300, 3, replace=False) for _ in range(199)]
    lists.insert(7, np.argsort(-(items @ many[7]))[:250])  # excludes its 250 best items
    heavy = UserItems.from_lists(lists)
    fast = rank_by_factors(many, items, 10, exclude=heavy, allowed=allowed)
    dense = rank(lambda a, b: many[a:b] @ items.T, 200, 300, 10, heavy, allowed)
    assert (fast == dense).all()
    for recs in (fast, rank_by_scores(np.arange(300.0), 200, 10, heavy, allowed)):
        assert not set(recs[7]) & set(lists[7])
    # a catalogue smaller than k pads with -1
    tiny = rank_by_factors(users[:2], items[:3], 5, exclude=UserItems.from_lists([[0], []]))
    assert (tiny[0, 2:] == -1).all() and (tiny[1, 3:] == -1).all()
    assert set(tiny[0, :2]) == {1, 2} and set(tiny[1, :3]) == {0, 1, 2}


def test_intra_list_diversity_is_one_minus_the_co_occurrence_cosine():
    import scipy.sparse as sp

    from recsys.quality import intra_list_diversity

    # users x items: items 0 and 1 always together, item 2 alone, item 3 never seen
    x = sp.csr_matrix(np.array([[1, 1, 0, 0], [2, 1, 0, 0], [0, 0, 1, 0]]))
    assert intra_list_diversity(np.array([[0, 1]]), x) == pytest.approx(0.0)
    assert intra_list_diversity(np.array([[0, 2]]), x) == pytest.approx(1.0)
    assert intra_list_diversity(np.array([[0, 1, 2]]), x) == pytest.approx(2 / 3)
    # -1 pads are left out, and a one-item list does not count
    assert intra_list_diversity(np.array([[0, 1, -1], [3, -1, -1]]), x) == pytest.approx(0.0)
    assert intra_list_diversity(np.array([[0, 3]]), x) == pytest.approx(1.0)
