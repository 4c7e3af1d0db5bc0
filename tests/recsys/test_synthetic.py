"""The synthetic generator: shape (tree, funnel, long tails, sessions) and learnable signal."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys import quality
from recsys.confidence import confidence, event_weights_array
from recsys.events import validate_event
from recsys.settings import DEFAULT_EVENT_WEIGHTS
from recsys.sources import FRAME_COLUMNS, iter_events, make_frame, synthetic

START_MS = 1_700_000_000_000  # pinned window: frames compare equal across runs


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return synthetic.generate(100_000, seed=11, start_ms=START_MS, days=30)


def test_same_seed_same_frame_other_seed_other_frame() -> None:
    a = synthetic.generate(3_000, seed=5, start_ms=START_MS)
    b = synthetic.generate(3_000, seed=5, start_ms=START_MS)
    c = synthetic.generate(3_000, seed=6, start_ms=START_MS)
    pd.testing.assert_frame_equal(a, b)
    assert not a[["user_id", "item_id"]].equals(c[["user_id", "item_id"]])


def test_frame_follows_the_event_frame_convention(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == FRAME_COLUMNS
    assert len(frame) == 100_000
    assert frame["event_id"].is_unique
    assert frame["timestamp"].is_monotonic_increasing
    # Same dtypes and values as the generic constructor would give.
    rebuilt = make_frame(frame.user_id, frame.item_id, frame.event_type, frame.timestamp,
                         frame.value, frame.event_id)
    pd.testing.assert_frame_equal(frame, rebuilt)
    window = (START_MS, START_MS + 30 * synthetic.MS_PER_DAY)
    assert frame.timestamp.min() >= window[0] and frame.timestamp.max() < window[1]
    # Every row is a valid wire event.
    assert sum(1 for _ in iter_events(frame.iloc[:2_000])) == 2_000


def test_default_window_ends_in_the_past_and_validates() -> None:
    now_ms = int(time.time() * 1000)
    frame = synthetic.generate(2_000, seed=1, days=10)
    assert frame.timestamp.max() < now_ms
    assert frame.timestamp.min() >= now_ms - 11 * synthetic.MS_PER_DAY
    validate_event(frame.iloc[-1][["event_id", "user_id", "item_id", "event_type",
                                   "timestamp"]].to_dict())
    with pytest.raises(ValueError, match="before now"):
        synthetic.generate(10, start_ms=now_ms, days=1)


def test_funnel_in_retailrocket_proportions(frame: pd.DataFrame) -> None:
    share = frame.event_type.value_counts(normalize=True)
    assert share["view"] == pytest.approx(0.967, abs=0.006)
    assert share["addtocart"] == pytest.approx(0.025, abs=0.004)
    assert share["transaction"] == pytest.approx(0.008, abs=0.002)
    # A transaction follows an add-to-cart of the same item by the same user, which follows a
    # view of it.
    buys = frame[frame.event_type == "transaction"].iloc[:200]
    for buy in buys.itertuples():
        before = frame[(frame.user_id == buy.user_id) & (frame.item_id == buy.item_id)
                       & (frame.timestamp <= buy.timestamp)]
        assert {"view", "addtocart"} <= set(before.event_type)


def test_category_tree_has_retailrocket_shape() -> None:
    tree = synthetic.category_tree(seed=3, n_items=5_000)
    assert len(tree) == 1_669
    assert tree.parentid.isna().sum() == 25
    world = synthetic.build_world(3, 5_000)
    assert np.bincount(world.category_depth).tolist() == list(synthetic.TREE_LEVEL_SIZES)
    # Items sit in leaves only.
    parents = set(tree.parentid.dropna().astype(int))
    items = synthetic.catalog(seed=3, n_items=5_000)
    assert len(items) == 5_000 and items.item_id.is_unique
    assert not set(items.category_id) & parents
    # -1: the item's leaf is a root without children (Retailrocket has one such root).
    assert (items.parent_category_id.isin(tree.categoryid) | (items.parent_category_id == -1)).all()
    assert (items.price > 0).all()


def test_catalog_covers_generated_items(frame: pd.DataFrame) -> None:
    items = synthetic.catalog(seed=11, n_events=len(frame))
    assert set(frame.item_id) <= set(items.item_id)
    explicit = synthetic.generate(500, seed=4, n_items=300, start_ms=START_MS)
    assert set(explicit.item_id) <= set(synthetic.catalog(seed=4, n_items=300).item_id)


def test_long_tails_and_returning_users(frame: pd.DataFrame) -> None:
    per_item = frame.item_id.value_counts()
    top_1pct = per_item.iloc[: max(1, len(per_item) // 100)].sum() / len(frame)
    assert top_1pct > 0.15                     # a few items take a large share
    assert (per_item <= 5).mean() > 0.2        # and a long tail is rarely seen
    per_user = frame.user_id.value_counts()
    assert (per_user <= 2).mean() > 0.45       # most visitors come and go
    assert (per_user >= 10).mean() > 0.08      # a meaningful share returns


def test_sessions_are_bursts_with_gaps_between_visits(frame: pd.DataFrame) -> None:
    by_user = frame.sort_values(["user_id", "timestamp"], kind="stable")
    same = by_user.user_id.to_numpy()[1:] == by_user.user_id.to_numpy()[:-1]
    gaps_s = np.diff(by_user.timestamp.to_numpy())[same] / 1000
    within = (gaps_s < 10 * 60).mean()
    between = (gaps_s > 3600).mean()
    assert within > 0.4 and between > 0.2, (within, between)


# --- signal: a model trained on the past beats popularity on the future -------------------

def _recommend_metrics(recs: dict[int, list[int]], truth: dict[int, set[int]],
                       k: int = 10) -> tuple[float, float]:
    """Mean NDCG@k and recall@k over users with held-out items (recsys.quality)."""
    users = list(truth)
    relevant = quality.UserItems.from_lists([sorted(truth[u]) for u in users])
    recommended = np.array([recs[u][:k] + [-1] * (k - len(recs[u][:k])) for u in users])
    hit = quality.hits(recommended, relevant)
    return (quality.ndcg_at_k(hit, relevant.counts, k),
            quality.recall_at_k(hit, relevant.counts, k))


def test_als_on_the_past_predicts_the_future_better_than_popularity() -> None:
    from implicit.cpu.als import AlternatingLeastSquares

    frame = synthetic.generate(60_000, seed=21, start_ms=START_MS)
    cut = frame.timestamp.min() + 0.8 * (frame.timestamp.max() - frame.timestamp.min())
    train, test = frame[frame.timestamp < cut], frame[frame.timestamp >= cut]
    users = {u: i for i, u in enumerate(train.user_id.unique())}
    items = {x: i for i, x in enumerate(train.item_id.unique())}
    weights = event_weights_array(train.event_type.to_numpy(), train.value.to_numpy(),
                                  DEFAULT_EVENT_WEIGHTS)
    counts = sp.csr_matrix((weights, (train.user_id.map(users), train.item_id.map(items))),
                           shape=(len(users), len(items)))
    counts.sum_duplicates()
    conf = counts.copy()
    conf.data = confidence(conf.data, alpha=2.0)
    model = AlternatingLeastSquares(factors=32, regularization=0.05, iterations=10,
                                    alpha=1.0, random_state=0)
    model.fit(conf, show_progress=False)

    # Held out: future items of known users, minus what they already saw in training.
    known = test[test.user_id.isin(users) & test.item_id.isin(items)]
    truth: dict[int, set[int]] = {}
    for user, group in known.groupby("user_id"):
        u = users[user]
        future = {items[i] for i in group.item_id} - set(counts[u].indices)
        if future:
            truth[u] = future
    assert len(truth) > 500

    rows = np.fromiter(truth, dtype=np.int64)
    ids, _ = model.recommend(rows, counts[rows], N=10, filter_already_liked_items=True)
    als = {int(u): [int(x) for x in r] for u, r in zip(rows, ids, strict=True)}
    ranking = np.argsort(-np.asarray((counts > 0).sum(axis=0)).ravel(), kind="stable")
    popular = {}
    for u in truth:
        seen = set(counts[u].indices)
        popular[u] = [int(i) for i in ranking[: 10 + len(seen)] if i not in seen][:10]

    als_ndcg, als_recall = _recommend_metrics(als, truth)
    pop_ndcg, pop_recall = _recommend_metrics(popular, truth)
    print(f"synthetic signal: ALS ndcg@10={als_ndcg:.4f} recall@10={als_recall:.4f}; "
          f"popularity ndcg@10={pop_ndcg:.4f} recall@10={pop_recall:.4f}")
    assert als_ndcg > 1.5 * pop_ndcg
    assert als_recall > 1.5 * pop_recall


def test_tastes_are_the_ones_the_events_were_drawn_from() -> None:
    from recsys.sources.synthetic import NOISE_SHARE, generate, tastes

    frame = generate(20_000, seed=3)
    hidden = tastes(20_000, seed=3)
    hit = [hidden.affinity(u, i) > 0 for u, i in zip(frame.user_id, frame.item_id, strict=True)]
    # Every non-noise pick is inside one of the user's interests.
    assert sum(hit) / len(hit) >= 1 - NOISE_SHARE - 0.02
    other = frame.user_id.sample(frac=1.0, random_state=0).to_numpy()  # someone else's tastes
    miss = [hidden.affinity(u, i) > 0 for u, i in zip(other, frame.item_id, strict=True)]
    assert sum(miss) / len(miss) < 0.2
    assert hidden.affinity("nobody", "i1") == 0.0
