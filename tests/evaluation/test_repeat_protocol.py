"""`--protocol time-repeat`: the time split that keeps seen items, so "buy again" is measured
(re-bought items count as relevant and are not excluded from the ranking)."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.evaluate import rank_popularity, run_evaluation
from evaluation.protocols import make_split
from recsys.matrix import index_events
from recsys.sources import make_frame

from .conftest import DAY, T0


@pytest.fixture(scope="module")
def rebuys():
    """A grocery-like log: each member re-buys 3 staples of their own about weekly, plus a
    one-off purchase of a popular-skewed item now and then."""
    rng = np.random.default_rng(11)
    n_users, n_items = 200, 120
    users, items, times = [], [], []
    popular = 1.0 / (1 + np.arange(n_items))
    popular /= popular.sum()
    for u in range(n_users):
        staples = rng.choice(n_items, 3, replace=False)
        for day in range(0, 60, 7):
            for item in staples:
                users.append(u)
                items.append(int(item))
                times.append(T0 + (day + rng.uniform(0, 3)) * DAY)
        for _ in range(4):
            users.append(u)
            items.append(int(rng.choice(n_items, p=popular)))
            times.append(T0 + rng.uniform(0, 60) * DAY)
    return make_frame(user_id=[f"m{u}" for u in users], item_id=[f"p{i}" for i in items],
                      event_type="transaction", timestamp=np.array(times, dtype=np.int64))


def test_repeat_split_keeps_rebought_items_relevant_and_rankable(rebuys, fast_settings):
    events = index_events(rebuys, fast_settings.event_weights)
    plain = make_split("time", events, 2.0)
    repeat = make_split("time-repeat", events, 2.0)
    assert np.array_equal(plain.train_mask, repeat.train_mask)  # the same cut
    assert plain.holdout.n_repeat_pairs == 0 and plain.holdout.exclude is plain.holdout.seen
    assert repeat.holdout.exclude is None
    assert repeat.holdout.n_repeat_pairs > 0
    assert repeat.holdout.n_test_pairs == plain.holdout.n_test_pairs \
        + repeat.holdout.n_repeat_pairs
    # popularity now ranks items the user already bought, as "buy again" needs
    recs = rank_popularity(repeat, events, 10)
    h = repeat.holdout
    seen_in_recs = sum(np.isin(recs[j], h.seen.indices[h.seen.indptr[j]:h.seen.indptr[j + 1]])
                       .any() for j in range(h.n_users))
    assert seen_in_recs > 0
    plain_recs = rank_popularity(plain, events, 10)
    p = plain.holdout
    assert not any(np.isin(plain_recs[j], p.seen.indices[p.seen.indptr[j]:p.seen.indptr[j + 1]])
                   .any() for j in range(p.n_users))


def test_evaluate_reports_a_buy_again_row_that_beats_popularity(rebuys, fast_settings,
                                                                tmp_path):
    report = run_evaluation(rebuys, fast_settings, tmp_path, k=10,
                            protocols=("time", "time-repeat"))
    plain = report["protocols"]["time"]
    repeat = report["protocols"]["time-repeat"]
    assert "history (buy again)" not in plain["models"]
    models = repeat["models"]
    assert set(models) == {"popularity", "history (buy again)", "item-kNN", "ALS", "selected"}
    # members re-buy their own staples: their history is far better than the bestsellers
    assert models["history (buy again)"]["ndcg@10"] > 2 * models["popularity"]["ndcg@10"]
    assert repeat["n_repeat_pairs"] > 0
    md = (tmp_path / "report.md").read_text()
    assert "## Protocol: time-repeat" in md and "held-out pairs are re-buys" in md
