"""The two selections of recsys.neighbours give the same cosine neighbours."""

import numpy as np

from recsys.neighbours import cosine_neighbour_lists, cosine_neighbours, item_norms


def test_one_item_and_many_items_give_the_same_neighbours_zero_vectors_included():
    rng = np.random.default_rng(3)
    factors = rng.standard_normal((6000, 8)).astype(np.float32)  # large: select_top prefilters
    factors[11] = 0.0  # a zero vector: norm taken as 1, cosines 0, never a division by zero
    rows = np.array([0, 11, 4321])
    idx, scores = cosine_neighbour_lists(factors, 20, rows)
    norms = item_norms(factors)
    assert norms[11] == 1.0
    for j, row in enumerate(rows.tolist()):
        one, one_scores = cosine_neighbours(factors, 20, row, norms=norms)
        assert row not in one.tolist() and row not in idx[j].tolist()
        np.testing.assert_allclose(one_scores, scores[j], atol=1e-5)
        if row != 11:  # all-zero cosines tie: any order is right
            assert one.tolist() == idx[j].tolist()
