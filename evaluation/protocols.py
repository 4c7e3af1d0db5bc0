"""The two offline protocols of `recsys evaluate` and `recsys tune`, stated exactly.

Both work on `recsys.matrix.IndexedEvents` (one shared user/item index over the whole
history) and return a `Split`: boolean masks over the events plus the `Holdout` that the
ranking code consumes (test users, their held-out items, their training items to exclude).

* **time** (how the system is used; the trainer's gate uses the same split):
  cutoff = the event-count quantile (1 - holdout_fraction) of the timestamps; train = events
  before it, test = events at or after it. Test users must have training events; held-out
  items must occur in training and not already be in the user's training items
  (recsys.split.build_holdout). Every event type counts as relevant.

* **stratified** (Microsoft Recommenders' benchmark protocol, `python_stratified_split`,
  ratio 0.75, seed 42; recsys.split.stratified_train_mask): one seeded uniform draw per event
  in source (file) order; per user, the events with the smallest draws, round(ratio * n_u) of
  them (half to even), train and the rest test. On ML-100K's u.data the test part equals
  theirs row for row (tests/evaluation/test_reference_split.py). Every user is in both
  parts. Items seen in training are removed from the user's ranking. The held-out items are
  all of the user's test items, including the few that never occur in training (no model can
  rank those, but they still count in recall and the ideal DCG, as in the reference).

* **time-repeat** (buy again): the time split, but held-out items the user already had in
  training stay relevant and training items are not excluded from the ranking, so a model
  that ranks re-buys is measured instead of filtered away. `evaluate` adds a "history (buy
  again)" row (the user's own training items by confidence, then popularity) as the floor
  for re-buys.

* **cold-items** (new items): a seeded random `cold_fraction` (20 %, seed 42) of the items
  never appear in training: train = every event on the other items; test users = users
  with training events and events on cold items; relevant = their cold items; only the cold
  items are ranked (no interaction data can rank them: attributes must).

`mask` restricts any protocol to a subset of the events: `recsys tune` splits the
training part again to get its validation split and never sees the test events.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp

from recsys.matrix import IndexedEvents, confidence_matrix
from recsys.quality import UserItems
from recsys.split import Holdout, build_holdout, cutoff_for, stratified_train_mask

PROTOCOLS = ("time", "stratified", "time-repeat", "cold-items")

TIME_DESCRIPTION = (
    "time split: the last {pct:.0%} of events (by timestamp, cut at the event-count "
    "quantile) are the test set; test users must have training events; held-out items must "
    "occur in training and not be among the user's training items; training items are "
    "excluded from each user's top-k; every event type counts as relevant")
TIME_REPEAT_DESCRIPTION = (
    "time split keeping seen items (buy again): the last {pct:.0%} of events (by timestamp) "
    "are the test set; test users must have training events; held-out items must occur in "
    "training and MAY be among the user's training items (re-buys count); training items are "
    "NOT excluded from the top-k; every event type counts as relevant")
STRATIFIED_DESCRIPTION = (
    "stratified split (Microsoft Recommenders' python_stratified_split): per user, a random "
    "{ratio:.0%}/{rest:.0%} split of the user's events (one numpy RandomState({seed}) draw per "
    "event in file order, round(ratio * n) per user train), every user in both parts; items "
    "seen in training removed from the ranking; every held-out item is relevant")
COLD_FRACTION = 0.2
COLD_ITEMS_DESCRIPTION = (
    "cold items: a random {pct:.0%} of the items (seed {seed}) never appear in training; "
    "train = every event on the other items; for every user with training events and events "
    "on cold items, only the {n_cold:,} cold items are ranked and the user's cold items are "
    "relevant")


@dataclass(frozen=True)
class Split:
    protocol: str
    description: str
    train_mask: np.ndarray   # bool per event
    test_mask: np.ndarray    # bool per event
    holdout: Holdout
    conf_train: sp.csr_matrix  # confidences of the training events (users x items)

    @property
    def n_train(self) -> int:
        return int(self.train_mask.sum())

    @property
    def n_test(self) -> int:
        return int(self.test_mask.sum())


def _subset(events: IndexedEvents, mask: np.ndarray | None) -> np.ndarray:
    if mask is None:
        return np.ones(len(events), dtype=bool)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (len(events),):
        raise ValueError("mask must hold one bool per event")
    return mask


def time_split(events: IndexedEvents, alpha: float, holdout_fraction: float,
               mask: np.ndarray | None = None, max_users: int | None = None,
               seed: int = 0, keep_seen: bool = False) -> Split:
    subset = _subset(events, mask)
    ts = events.timestamps
    cutoff = cutoff_for(ts[subset], holdout_fraction)
    train = subset & (ts < cutoff)
    test = subset & (ts >= cutoff)
    conf = confidence_matrix(events, alpha, train)
    holdout = build_holdout(events.rows[test], events.cols[test], conf, cutoff,
                            max_users=max_users, seed=seed, keep_seen=keep_seen)
    if keep_seen:
        return Split("time-repeat", TIME_REPEAT_DESCRIPTION.format(pct=holdout_fraction), train,
                     test, holdout, conf)
    return Split("time", TIME_DESCRIPTION.format(pct=holdout_fraction), train, test, holdout,
                 conf)


def stratified_split(events: IndexedEvents, alpha: float, ratio: float = 0.75, seed: int = 42,
                     mask: np.ndarray | None = None) -> Split:
    subset = _subset(events, mask)
    train = stratified_train_mask(events.rows, ratio, seed, events.source_rows, subset)
    test = subset & ~train
    conf = confidence_matrix(events, alpha, train)
    conf.sort_indices()
    n_users, n_items = conf.shape
    # Held-out (user, item) pairs minus those already in the user's training items.
    train_keys = np.unique(events.rows[train].astype(np.int64) * n_items + events.cols[train])
    keys = np.unique(events.rows[test].astype(np.int64) * n_items + events.cols[test])
    keys = keys[~np.isin(keys, train_keys)]
    users, counts = np.unique(keys // n_items, return_counts=True)
    relevant = UserItems(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
                         (keys % n_items).astype(np.int64))
    sub = conf[users]
    holdout = Holdout(
        cutoff_ms=-1, users=users, relevant=relevant,
        seen=UserItems(sub.indptr.astype(np.int64), sub.indices.astype(np.int64)),
        seen_values=np.asarray(sub.data), allowed=np.bincount(conf.indices, minlength=n_items) > 0,
        n_test_pairs=len(keys))
    description = STRATIFIED_DESCRIPTION.format(ratio=ratio, rest=1 - ratio, seed=seed)
    return Split("stratified", description, train, test, holdout, conf)


def cold_items_split(events: IndexedEvents, alpha: float, fraction: float = 0.2,
                     seed: int = 42, mask: np.ndarray | None = None) -> Split:
    from recsys.content_fit import holdout_of_items

    subset = _subset(events, mask)
    n_items = events.shape[1]
    present = np.flatnonzero(np.bincount(events.cols[subset], minlength=n_items) > 0)
    rng = np.random.default_rng(seed)
    cold = np.zeros(n_items, dtype=bool)
    cold[rng.choice(present, int(round(fraction * len(present))), replace=False)] = True
    train = subset & ~cold[events.cols]
    test = subset & cold[events.cols]
    conf = confidence_matrix(events, alpha, train)
    everything = confidence_matrix(events, alpha, subset)
    holdout = holdout_of_items(everything, cold)
    # fold-in histories are the training confidences (a cold item never adds to them)
    description = COLD_ITEMS_DESCRIPTION.format(pct=fraction, seed=seed, n_cold=int(cold.sum()))
    return Split("cold-items", description, train, test, holdout, conf)


def make_split(protocol: str, events: IndexedEvents, alpha: float, *,
               holdout_fraction: float = 0.2, ratio: float = 0.75, seed: int = 42,
               mask: np.ndarray | None = None, max_users: int | None = None) -> Split:
    if protocol == "cold-items":
        return cold_items_split(events, alpha, COLD_FRACTION, seed, mask)
    if protocol == "time":
        return time_split(events, alpha, holdout_fraction, mask, max_users, seed)
    if protocol == "stratified":
        return stratified_split(events, alpha, ratio, seed, mask)
    if protocol == "time-repeat":
        return time_split(events, alpha, holdout_fraction, mask, max_users, seed,
                          keep_seen=True)
    raise ValueError(f"unknown protocol {protocol!r}; known: {PROTOCOLS}")


def with_alpha(split: Split, events: IndexedEvents, alpha: float) -> Split:
    """The same split with confidences rebuilt for another alpha (the training matrix and
    the test users' fold-in histories); the partition does not change."""
    conf = confidence_matrix(events, alpha, split.train_mask)
    sub = conf[split.holdout.users]
    if not np.array_equal(sub.indices, split.holdout.seen.indices):
        raise ValueError("confidence pattern changed with alpha; the split is inconsistent")
    holdout = replace(split.holdout, seen_values=np.asarray(sub.data))
    return replace(split, holdout=holdout, conf_train=conf)
