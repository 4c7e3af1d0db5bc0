"""Pure scoring logic against brute force (no Redis, no app)."""

import numpy as np
import pytest

from recsys.ann import AnnIndex, build_layout
from recsys.foldin import fold_in, gram
from recsys.neighbours import cosine_neighbours
from recsys.topk import select_top, top_k
from serving.scoring import (
    ann_neighbours,
    ann_recommend,
    fold_in_session,
    join_rows,
    merge_ranked,
    recommend,
    rows_of,
    score_batch,
    session_confidences,
    top_of_scores,
    top_page,
)

rng = np.random.default_rng(0)
FACTORS = rng.normal(size=(500, 16)).astype(np.float32)
USER = rng.normal(size=16).astype(np.float32)


def brute_top(scores, k, banned=()):
    order = [int(i) for i in np.argsort(-scores, kind="stable") if int(i) not in set(banned)]
    return order[:k]


def test_recommend_matches_brute_force_with_exclusions():
    exclude = np.array([3, 17, 250], dtype=np.intp)
    scores = FACTORS @ USER
    rows, got = recommend(USER, FACTORS, 20, exclude)
    assert rows.tolist() == brute_top(scores, 20, exclude.tolist())
    np.testing.assert_allclose(got, scores[rows], rtol=1e-6)
    assert not set(rows.tolist()) & set(exclude.tolist())


def test_recommend_with_candidates_only_ranks_those():
    candidates = np.array([5, 9, 40, 41, 42, 300], dtype=np.intp)
    rows, _ = recommend(USER, FACTORS, 4, exclude=np.array([40]), candidates=candidates)
    scores = FACTORS @ USER
    expected = sorted([5, 9, 41, 42, 300], key=lambda r: -scores[r])[:4]
    assert rows.tolist() == expected


def test_recommend_returns_fewer_when_everything_is_excluded():
    rows, _ = recommend(USER, FACTORS[:3], 10, exclude=np.array([0, 1, 2]))
    assert len(rows) == 0


def test_cosine_neighbours_excludes_the_item_and_ranks_by_cosine():
    norms = np.linalg.norm(FACTORS, axis=1)
    rows, scores = cosine_neighbours(FACTORS, 5, 7, norms=norms.astype(np.float32))
    cosine = (FACTORS @ FACTORS[7]) / (norms * norms[7])
    assert 7 not in rows.tolist()
    assert rows.tolist() == brute_top(cosine, 5, [7])
    np.testing.assert_allclose(scores, cosine[rows], rtol=1e-5)


def test_rows_of_skips_unknown_and_join_handles_empties():
    index = {"a": 0, "b": 4}
    assert rows_of(index, ["b", "zz", "a"]).tolist() == [4, 0]
    assert rows_of(index, []).dtype == np.intp
    assert join_rows(rows_of(index, []), np.array([2])).tolist() == [2]


def test_session_fold_in_sums_repeats_like_the_confidence_rule():
    rows, conf = session_confidences([5, 9, 5], [1.0, 4.0, 2.0], alpha=2.0)
    assert rows.tolist() == [5, 9]
    np.testing.assert_allclose(conf, [1 + 2.0 * 3.0, 1 + 2.0 * 4.0])
    yty = gram(FACTORS)
    got = fold_in_session(FACTORS, yty, 0.1, 2.0, [5, 9, 5], [1.0, 4.0, 2.0])
    want = fold_in(FACTORS, yty, 0.1, np.array([5, 9]), np.array([7.0, 9.0]))
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_merge_ranked_fills_in_order_and_names_the_sources():
    first = [("a", 3.0), ("b", 2.0)]
    second = [("b", 9.0), ("c", 1.0), ("d", 0.5), ("e", 0.1)]
    items, used = merge_ranked([("one", first), ("two", second)], 3, {"a"}, lambda i: i != "c")
    assert items == [("b", 2.0, "one"), ("d", 0.5, "two"), ("e", 0.1, "two")]
    assert used == ["one", "two"]
    items, used = merge_ranked([("one", first), ("two", iter(()))], 5, set())
    assert [i for i, _, _ in items] == ["a", "b"] and used == ["one"]


def test_select_top_is_exactly_top_k_on_large_catalogues():
    big = rng.normal(size=(20_000, 16)).astype(np.float32)
    for trial in range(20):
        scores = big @ rng.normal(size=16).astype(np.float32)
        if trial % 2:
            scores[rng.integers(0, len(scores), 50)] = -np.inf  # excluded rows
        if trial % 3 == 0:
            scores = np.round(scores, 1)  # many ties, including at the k-th place
        for k in (1, 10, 64, 100):
            got, expected = select_top(scores, k), top_k(scores, k)
            assert len(set(got.tolist())) == len(got) == len(expected)
            np.testing.assert_array_equal(scores[got], scores[expected])


def test_select_top_falls_back_when_the_sample_misleads_or_few_are_usable():
    scores = rng.normal(size=20_000).astype(np.float32)
    scores[:16 * 12:16] = 10.0  # the sample's top is far above the rest: < k candidates
    scores[1] = 20.0
    got = select_top(scores, 64)
    np.testing.assert_array_equal(scores[got], scores[top_k(scores, 64)])
    assert got[0] == 1
    few = np.full(20_000, -np.inf, dtype=np.float32)
    few[[7, 70, 700]] = [1.0, 3.0, 2.0]
    assert select_top(few, 64).tolist() == [70, 700, 7]


def test_score_batch_rows_are_each_users_scores():
    factors = rng.normal(size=(2500, 16)).astype(np.float32)  # not a multiple of the block
    users = [rng.normal(size=16).astype(np.float32) for _ in range(5)]
    for batch in (users[:1], users):
        rows = score_batch(factors, batch)
        assert rows.shape == (len(batch), len(factors)) and rows.flags.c_contiguous
        for row, user in zip(rows, batch, strict=True):
            np.testing.assert_allclose(row, factors @ user, rtol=1e-5, atol=1e-5)
    # Each row is a user's own: excluding in one leaves the others alone.
    rows = score_batch(factors, users)
    top_of_scores(rows[0], 5, exclude=np.arange(100))
    np.testing.assert_allclose(rows[1], factors @ users[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n", [50, 5000])
def test_top_page_pages_tile_the_score_then_row_order_even_with_ties(n):
    rng = np.random.default_rng(n)
    base = rng.integers(0, 7, size=n).astype(np.float32)  # heavy ties
    exclude = rng.choice(n, size=n // 10, replace=False)
    candidates = np.sort(rng.choice(n, size=n // 2, replace=False))
    for cand in (None, candidates):
        pool = np.arange(n) if cand is None else cand
        pool = pool[~np.isin(pool, exclude)]
        truth = pool[np.lexsort((pool, -base[pool]))]
        for k in (1, 3, 10):
            pages = []
            for offset in range(0, 40, k):
                rows, vals = top_page(base.copy(), offset, k, exclude, cand)
                assert np.array_equal(vals, base[rows])
                pages.extend(rows.tolist())
            assert pages == truth[:len(pages)].tolist()
            assert len(pages) == min(len(truth), -(-40 // k) * k)


def test_the_index_paths_score_the_rows_past_the_index_with_their_exclusions():
    """The index holds the version's 400 rows; 100 rows joined after it (fresh, mapped).
    Every cell probed, so the answers must equal exact scoring over all 500 rows, with
    exclusions on both sides of the boundary and a query row past it."""
    base = 400
    ann = AnnIndex(FACTORS[:base], build_layout(FACTORS[:base], n_lists=4, seed=0), n_probe=4)
    norms = np.linalg.norm(FACTORS, axis=1)
    exclude = np.array([3, 17, base + 1, base + 2, base + 50], dtype=np.intp)
    rows, scores = ann_recommend(ann, USER, FACTORS, 10, exclude, oversample=100)
    assert rows.tolist() == brute_top(FACTORS @ USER, 10, exclude)
    assert np.allclose(scores, (FACTORS @ USER)[rows])
    cosine = FACTORS @ FACTORS[base + 7] / (norms * norms[base + 7])
    rows, _ = ann_neighbours(ann, base + 7, FACTORS, norms, 10, exclude, oversample=100)
    assert rows.tolist() == brute_top(cosine, 10, [*exclude, base + 7])
    # fewer than k rows left in all: the caller scans instead
    every = np.arange(len(FACTORS) - 5, dtype=np.intp)
    assert ann_recommend(ann, USER, FACTORS, 10, every, oversample=100) is None
    assert ann_recommend(ann, USER, FACTORS, 5, every, oversample=100)[0].tolist() == \
        brute_top(FACTORS @ USER, 5, every)
