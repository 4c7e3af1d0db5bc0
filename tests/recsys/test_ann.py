"""The approximate-search index (recsys/ann.py): its top k against exact scoring, and its
published form."""

from __future__ import annotations

import numpy as np
import pytest

from bench.large_catalog import clustered_factors
from recsys.ann import AnnIndex, build_layout, pack_layout, recall_at_k, unpack_layout
from recsys.errors import ModelIntegrityError
from recsys.topk import top_k_rows

K = 64


@pytest.fixture(scope="module")
def catalogue() -> tuple[np.ndarray, np.ndarray]:
    return clustered_factors(60_000, 100, 64, seed=3)


def approx_top(index: AnnIndex, items: np.ndarray, users: np.ndarray, k: int,
               oversample: int) -> np.ndarray:
    out = []
    for user in users:
        rows = index.candidates(user, oversample * k)
        scores = items[rows] @ user  # exact re-scoring of the candidates
        out.append(rows[np.argsort(-scores)[:k]])
    return out


def test_top_k_from_the_index_finds_at_least_95_percent_of_the_exact_top_k(catalogue):
    items, users = catalogue
    layout = build_layout(items, seed=1)
    index = AnnIndex(items, unpack_layout(pack_layout(layout), len(items), items.shape[1]),
                     n_probe=64)
    exact = top_k_rows(users @ items.T, K)
    recall = recall_at_k(approx_top(index, items, users, K, oversample=4), exact)
    assert recall >= 0.95, recall


def test_one_probe_with_no_oversampling_misses_items_so_the_recall_check_can_fail(catalogue):
    items, users = catalogue
    index = AnnIndex(items, build_layout(items, seed=1), n_probe=1)
    exact = top_k_rows(users @ items.T, K)
    assert recall_at_k(approx_top(index, items, users, K, oversample=1), exact) < 0.95


def test_probing_every_list_is_exact():
    items, users = clustered_factors(2_000, 10, 8, seed=5)
    layout = build_layout(items, n_lists=8)
    index = AnnIndex(items, layout, n_probe=8)
    exact = top_k_rows(users @ items.T, 10)
    assert recall_at_k(approx_top(index, items, users, 10, oversample=1), exact) == 1.0


def test_a_layout_that_does_not_fit_the_factors_is_refused():
    items, _ = clustered_factors(500, 1, 8, seed=5)
    raw = pack_layout(build_layout(items, n_lists=4))
    with pytest.raises(ModelIntegrityError, match="assignment"):
        unpack_layout(raw, 499, 8)
    with pytest.raises(ModelIntegrityError, match="factors"):
        unpack_layout(raw, 500, 16)
    with pytest.raises(ModelIntegrityError, match="unreadable"):
        unpack_layout(b"not an archive", 500, 8)
