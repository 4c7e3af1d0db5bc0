"""`--protocol stratified` is Microsoft Recommenders' `python_stratified_split(ratio=0.75,
seed=42)`: the same algorithm on small data, and row for row the same test part on ML-100K."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest

from evaluation.protocols import make_split
from recsys.matrix import index_events
from recsys.settings import load_settings
from recsys.sources.registry import load_source
from recsys.split import stratified_train_mask
from tests.conftest import ML100K

REFERENCE_TEST = ML100K.parent / "ms_stratified_seed42_test.csv.gz"


def _reference_procedure(users: np.ndarray, ratio: float, seed: int) -> np.ndarray:
    """The reference's documented procedure stated with pandas: a seeded uniform column over
    the rows in their order, sort by (user, draw), per user the first round(ratio * n)
    rows train."""
    np.random.seed(seed)
    data = pd.DataFrame({"user": users, "random": np.random.rand(len(users))})
    data = data.sort_values(["user", "random"])
    place = data.groupby("user").cumcount()
    size = data.groupby("user")["user"].transform("count")
    n_train = np.array([round(ratio * n) for n in size])
    train = np.zeros(len(users), dtype=bool)
    train[data.index[place.to_numpy() < n_train]] = True
    return train


@pytest.mark.parametrize("ratio", [0.75, 0.5, 0.8])
def test_matches_the_reference_procedure(ratio: float) -> None:
    rng = np.random.default_rng(3)
    # users of 1..40 events (odd and even sizes: the half-to-even rounding matters), shuffled
    users = rng.permutation(np.repeat(np.arange(60), rng.integers(1, 41, 60)))
    train = stratified_train_mask(users, ratio, 42)
    assert np.array_equal(train, _reference_procedure(users, ratio, 42))


def test_source_order_not_frame_order_drives_the_draw() -> None:
    rng = np.random.default_rng(4)
    users = rng.permutation(np.repeat(np.arange(30), 9))
    expected = _reference_procedure(users, 0.75, 42)
    # the same events in another (say time) order, with each event's file row alongside
    order = rng.permutation(len(users))
    train = stratified_train_mask(users[order], 0.75, 42, source_rows=order)
    assert np.array_equal(train, expected[order])
    # without the source rows the draw follows the given order: a different partition
    assert not np.array_equal(stratified_train_mask(users[order], 0.75, 42), expected[order])


def test_subset_splits_only_its_events() -> None:
    users = np.repeat(np.arange(10), 8)
    subset = np.arange(len(users)) % 2 == 0
    train = stratified_train_mask(users, 0.75, 7, subset=subset)
    assert not train[~subset].any()
    assert np.array_equal(train[subset], _reference_procedure(users[subset], 0.75, 7))


def test_bad_ratio_is_refused() -> None:
    with pytest.raises(ValueError, match="ratio"):
        stratified_train_mask(np.zeros(4, dtype=int), 1.0, 42)


def test_ml100k_test_part_equals_microsoft_recommenders_split() -> None:
    if not (ML100K.exists() and REFERENCE_TEST.exists()):
        pytest.skip(f"shared data not present: {ML100K.parent}")
    with gzip.open(REFERENCE_TEST, "rt") as fh:
        reference = pd.read_csv(fh, dtype=str)
    frame = load_source(f"movielens:{ML100K}")
    events = index_events(frame, load_settings().event_weights)
    split = make_split("stratified", events, 1.0)
    ours = pd.DataFrame({"user_id": events.user_ids[events.rows[split.test_mask]],
                         "item_id": events.item_ids[events.cols[split.test_mask]]})
    assert len(ours) == len(reference) == 25_008
    key = ["user_id", "item_id"]
    pd.testing.assert_frame_equal(ours.sort_values(key).reset_index(drop=True),
                                  reference.sort_values(key).reset_index(drop=True))
    assert split.n_train == 100_000 - 25_008
