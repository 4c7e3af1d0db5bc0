"""Splits of an event history into a training and a test part.

Time-based holdout: train on the past, test on the future, as the model will be used.

    cutoff      = the timestamp below which (1 - holdout_fraction) of the events lie
    train       = events with timestamp <  cutoff
    test        = events with timestamp >= cutoff, kept only when
                  - the user also has training events (test users = users in both parts:
                    a model cannot rank for a user it knows nothing about),
                  - the item occurs in training (no model can score an item it never saw),
                  - the user did not already have the item in training (those items are
                    excluded from the user's ranking, so they cannot count as hits either),
                    unless `keep_seen`: then re-bought items stay held out and nothing is
                    excluded from the ranking ("buy again" is measured, not filtered away)

The cut is by share of events, not of wall-clock time, so a quiet period at the end of the
log (or a burst) does not leave an empty or a huge holdout.

Stratified (Microsoft Recommenders' `python_stratified_split`): per user, a seeded random
share of the user's events trains, the rest tests; see `stratified_train_mask`.

Works on integer user rows / item columns (a shared index over the whole history) and the
training matrix the caller built from the events before the cutoff, so the same rows and
columns serve fitting, fold-in and ranking.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from recsys.quality import UserItems, unique_sorted


def cutoff_for(timestamps: np.ndarray, holdout_fraction: float) -> int:
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError("holdout_fraction must be in (0, 1)")
    ts = np.asarray(timestamps, dtype=np.int64)
    if ts.size == 0:
        raise ValueError("cannot split an empty history")
    # 'higher' keeps at least one event in the holdout even for tiny inputs
    return int(np.quantile(ts, 1.0 - holdout_fraction, method="higher"))


@dataclass(frozen=True)
class Holdout:
    cutoff_ms: int
    users: np.ndarray  # sorted user rows of the test users
    relevant: UserItems  # row j: held-out item columns of users[j]
    seen: UserItems  # row j: training item columns of users[j] (excluded from the ranking)
    seen_values: np.ndarray  # training matrix values aligned with seen.indices (fold-in input)
    allowed: np.ndarray  # bool per item column: the item occurs in training
    n_test_pairs: int
    exclude_seen: bool = True  # False: training items stay rankable (and may be held out)
    n_repeat_pairs: int = 0  # held-out pairs the user already had in training (keep_seen)

    @property
    def exclude(self) -> UserItems | None:
        """What a ranking must leave out: the training items, unless they are kept."""
        return self.seen if self.exclude_seen else None

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return int(self.allowed.sum())

    def histories(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(item columns, values) of each test user's training row, for fold-in."""
        ptr = self.seen.indptr
        return [(self.seen.indices[ptr[j]:ptr[j + 1]], self.seen_values[ptr[j]:ptr[j + 1]])
                for j in range(self.n_users)]


def build_holdout(test_rows: np.ndarray, test_cols: np.ndarray, train: sp.csr_matrix,
                  cutoff_ms: int, max_users: int | None = None, seed: int = 0,
                  keep_seen: bool = False) -> Holdout:
    """Filter the events after the cutoff (rows, cols) against the training matrix.

    `max_users` caps the number of test users (a seeded random sample) so evaluation stays
    cheap next to the fit on large histories.
    """
    train = sp.csr_matrix(train)
    train.sort_indices()
    n_users, n_items = train.shape
    rows = np.asarray(test_rows, dtype=np.int64)
    cols = np.asarray(test_cols, dtype=np.int64)
    user_known = np.diff(train.indptr) > 0
    allowed = np.bincount(train.indices, minlength=n_items) > 0
    keep = user_known[rows] & allowed[cols]
    rows, cols = rows[keep], cols[keep]
    # pairs the user already had in training (dropped unless kept): one sorted-key lookup
    train_keys = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(train.indptr)) \
        * n_items + train.indices
    keys = unique_sorted(rows * n_items + cols)
    pos = np.searchsorted(train_keys, keys)
    already = train_keys[np.minimum(pos, max(len(train_keys) - 1, 0))] == keys \
        if len(train_keys) else np.zeros(len(keys), dtype=bool)
    if not keep_seen:
        keys = keys[~already]
    users_all, counts = unique_sorted(keys // n_items, return_counts=True)
    if max_users is not None and len(users_all) > max_users:
        chosen = np.sort(np.random.default_rng(seed).choice(len(users_all), max_users,
                                                            replace=False))
        mask = np.isin(keys // n_items, users_all[chosen])
        keys = keys[mask]
        users_all, counts = users_all[chosen], counts[chosen]
    relevant = UserItems(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
                         (keys % n_items).astype(np.int64))
    sub = train[users_all]
    seen = UserItems(sub.indptr.astype(np.int64), sub.indices.astype(np.int64))
    n_repeat = int(np.isin(keys, train_keys).sum()) if keep_seen else 0
    return Holdout(cutoff_ms=int(cutoff_ms), users=users_all, relevant=relevant, seen=seen,
                   seen_values=np.asarray(sub.data), allowed=allowed, n_test_pairs=len(keys),
                   exclude_seen=not keep_seen, n_repeat_pairs=n_repeat)


def stratified_train_mask(user_rows: np.ndarray, ratio: float, seed: int,
                          source_rows: np.ndarray | None = None,
                          subset: np.ndarray | None = None) -> np.ndarray:
    """Train mask of Microsoft Recommenders' `python_stratified_split(ratio, seed)`.

        draw_e   = numpy.random.RandomState(seed).rand(n)[position of e in source order]
        per user u, events sorted by draw:  the first round(ratio * n_u) train, the rest test
                    (round = half to even, as Python's round on the float ratio * n_u)

    One draw over all events in their source (file) order, not one shuffle per user: that
    is what makes the partition equal theirs row for row, so `source_rows` (each event's row
    in its source; default: the given order) matters. `subset` restricts the split to some
    events (tuning splits the training part again); events outside it are False.
    """
    if not 0.0 < ratio < 1.0:
        raise ValueError("ratio must be in (0, 1)")
    user_rows = np.asarray(user_rows)
    n = len(user_rows)
    subset = np.ones(n, dtype=bool) if subset is None else np.asarray(subset, dtype=bool)
    if subset.shape != (n,):
        raise ValueError("subset must hold one bool per event")
    positions = np.flatnonzero(subset)
    if source_rows is not None:
        source_rows = np.asarray(source_rows)
        if source_rows.shape != (n,):
            raise ValueError("source_rows must hold one row number per event")
        positions = positions[np.argsort(source_rows[positions], kind="stable")]
    draw = np.random.RandomState(seed).rand(len(positions))
    users = user_rows[positions]
    order = np.lexsort((draw, users))
    sorted_users = users[order]
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
    counts = np.diff(np.r_[starts, len(order)])
    rank = np.arange(len(order)) - np.repeat(starts, counts)  # 0-based place in the user's draw
    n_train = np.rint(ratio * counts)  # rint rounds half to even, like Python's round
    train = np.zeros(n, dtype=bool)
    train[positions[order[rank < np.repeat(n_train, counts)]]] = True
    return train
