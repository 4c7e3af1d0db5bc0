"""Repeat purchases: the re-buy rate, the fused ranking and the fitted weight."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.matrix import index_events
from recsys.quality import UserItems
from recsys.repeat import fit_weight, fuse, keep_seen_validation, repeat_rate


def frame(rows: list[tuple[str, str, str, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "timestamp"]
                        ).assign(value=np.nan)


def test_repeat_rate_counts_pairs_bought_at_two_times() -> None:
    f = frame([("a", "x", "transaction", 1), ("a", "x", "transaction", 2),
               ("a", "y", "transaction", 3), ("b", "x", "transaction", 4),
               ("b", "x", "transaction", 4),  # the same time twice: one purchase
               ("b", "z", "view", 5), ("b", "z", "view", 6)])  # views are no purchases
    events = index_events(f, {"transaction": 1.0, "view": 1.0})
    purchase = (f["event_type"] == "transaction").to_numpy()
    assert repeat_rate(events, np.ones(len(f), bool), purchase) == 1 / 3
    # without any purchase, every event type counts: b re-viewed z
    assert repeat_rate(events, np.ones(len(f), bool), np.zeros(len(f), bool)) == 2 / 4


def test_fuse_brings_own_items_up_by_weight() -> None:
    model, own = [10, 11, 12], [5, 6]
    assert [r for r, _ in fuse(model, own, 0.0, 3)] == [10, 11, 12]
    assert [r for r, _ in fuse(model, own, 1.0, 3)][:2] in ([10, 5], [5, 10])
    assert [r for r, _ in fuse(model, own, 4.0, 3)][:2] == [5, 6]


def test_weight_is_fitted_where_users_rebuy_and_zero_where_they_do_not() -> None:
    model_recs = np.array([[3, 4, 5], [3, 4, 5]])
    own = [np.array([0, 1]), np.array([1, 2])]
    rebuy = UserItems(np.array([0, 1, 2]), np.array([0, 1]))  # each re-buys its newest item
    weight, scores = fit_weight(model_recs, own, rebuy, 3, 6, "ndcg@3")
    assert weight > 0 and scores[weight] > scores[0.0]
    new = UserItems(np.array([0, 1, 2]), np.array([3, 3]))  # both take the model's first
    weight, scores = fit_weight(model_recs, own, new, 3, 6, "ndcg@3")
    assert weight == 0.0


def test_keep_seen_validation_counts_rebought_items_as_relevant() -> None:
    rows = []
    for u in range(20):
        rows += [(f"u{u}", "milk", "transaction", 100 + u), (f"u{u}", "bread", "transaction",
                                                               200 + u)]
        rows += [(f"u{u}", "milk", "transaction", 1000 + u)]  # later: milk again
    f = frame(rows)
    events = index_events(f, {"transaction": 1.0})
    fit, holdout, own = keep_seen_validation(events, np.ones(len(f), bool), 0.3, 100, 0)
    milk = list(events.item_ids).index("milk")
    assert holdout.n_users >= 15  # those with a purchase after the cut
    assert (holdout.relevant.indices == milk).all()  # a re-buy, kept as relevant
    assert all(items[0] == list(events.item_ids).index("bread") for items in own)
