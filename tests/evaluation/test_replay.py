"""Streaming replay: uses the stream's own fold-in path, and fold-in pays off when tastes are
revealed after the training cutoff."""

from __future__ import annotations

import pandas as pd
import pytest

import recsys.foldin
import recsys.userstate
from evaluation import replay
from evaluation.replay import FOLDIN, POPULARITY, RETRAIN, RETRAIN_FOLDIN, STATIC, run_replay

from .conftest import DAY, T0, clustered_frame


def test_replay_uses_the_stream_code_path() -> None:
    # the same objects, not copies: a change in the stream's state or maths changes the replay
    assert replay.UserState is recsys.userstate.UserState
    assert replay.Limits is recsys.userstate.Limits
    assert replay.fold_in_batch is recsys.foldin.fold_in_batch
    assert replay.fold_in_inputs is recsys.userstate.fold_in_inputs


@pytest.fixture(scope="module")
def revealed() -> pd.DataFrame:
    """Days 0-10: 300 users establish the item clusters. Days 10-20: 150 new users, each with
    one cluster, none seen before the cutoff (at half the events)."""
    old = clustered_frame(n_users=300, seed=1, days=10)
    new = clustered_frame(n_users=150, seed=2, start_user=10_000, t_start=T0 + 10 * DAY,
                          days=10, noise=0.0)
    frame = pd.concat([old, new.assign(event_id="n" + new["event_id"])])
    return frame.sort_values("timestamp", kind="stable").reset_index(drop=True)


def test_fold_in_beats_static_when_tastes_arrive_after_the_cutoff(
        revealed, fast_settings, tmp_path) -> None:
    n_old = int(revealed["user_id"].str.len().lt(6).sum())  # u0..u299 vs u10000..
    result = run_replay(revealed, fast_settings, k=10, train_fraction=n_old / len(revealed),
                        n_buckets=4, retrains=2)
    overall = result.overall
    for v in (POPULARITY, STATIC, FOLDIN, RETRAIN, RETRAIN_FOLDIN):
        assert 0.0 <= overall[v]["hit_rate"] <= 1.0
        assert overall[v]["n"] == result.n_targets
    new_users = result.by_user_kind["users new after the cutoff"]
    assert new_users[FOLDIN]["n"] > 1000
    # static knows nothing about the new users: it can only fall back to popularity
    assert new_users[STATIC]["hit_rate"] == pytest.approx(new_users[POPULARITY]["hit_rate"])
    # fold-in learns each new user's cluster from their first events
    assert new_users[FOLDIN]["hit_rate"] > new_users[STATIC]["hit_rate"] + 0.2
    assert overall[RETRAIN_FOLDIN]["hit_rate"] > overall[RETRAIN]["hit_rate"]
    assert len(result.retrain_times) == 2
    assert sum(b["n"] for b in result.buckets) == result.n_targets
    # The same figures as an online experiment report: popularity the control.
    ab = {v["name"]: v for v in result.experiment["variants"]}
    assert result.experiment["variants"][0]["name"] == POPULARITY
    assert ab[FOLDIN]["impressions"] == result.n_targets
    assert ab[FOLDIN]["ctr"] == pytest.approx(overall[FOLDIN]["hit_rate"])
    low, high = ab[FOLDIN]["ctr_ci95"]
    assert low <= ab[FOLDIN]["ctr"] <= high
    p_values = {c["variant"]: c["p_value"] for c in result.experiment["comparisons"]}
    assert p_values[RETRAIN_FOLDIN] < 0.05

    paths = result.draw(tmp_path)
    assert [p.name for p in paths] == ["replay_hit_rate.png", "replay_ndcg.png"]
    assert all(p.stat().st_size > 5_000 for p in paths)


def test_replay_rejects_bad_options(clustered, fast_settings) -> None:
    with pytest.raises(ValueError):
        run_replay(clustered, fast_settings, train_fraction=1.0)
    with pytest.raises(ValueError):
        run_replay(clustered, fast_settings, n_buckets=0)


def test_item_fold_in_recommends_items_launched_after_the_last_refit(fast_settings) -> None:
    """Days 0-10: items i0..i199. Days 10-20: 40 more items (i200..i239) join the same
    clusters. Without item fold-in no variant can rank them before a refit has seen them."""
    from evaluation.replay import ITEM_FOLDIN, NEW_ITEMS, RETRAIN_ITEM_FOLDIN

    old = clustered_frame(n_users=300, n_items=200, seed=1, days=10)
    new = clustered_frame(n_users=200, n_items=240, seed=4, start_user=10_000,
                          t_start=T0 + 10 * DAY, days=10)
    frame = pd.concat([old, new.assign(event_id="n" + new["event_id"])])
    frame = frame.sort_values("timestamp", kind="stable").reset_index(drop=True)
    result = run_replay(frame, fast_settings, k=10, train_fraction=len(old) / len(frame),
                        n_buckets=2, retrains=1)
    new_items, overall = result.by_item_kind[NEW_ITEMS], result.overall
    assert new_items[FOLDIN]["n"] > 200
    # Each variant's new items are the ones its own model lacks: a pair with and without item
    # fold-in is scored on the same targets; the static model lacks at least what a refit does.
    assert new_items[ITEM_FOLDIN]["n"] == new_items[FOLDIN]["n"]
    assert new_items[RETRAIN_ITEM_FOLDIN]["n"] == new_items[RETRAIN_FOLDIN]["n"]
    assert new_items[FOLDIN]["n"] > new_items[RETRAIN_FOLDIN]["n"]
    assert new_items[FOLDIN]["hit_rate"] == 0.0 and new_items[RETRAIN_FOLDIN]["hit_rate"] == 0.0
    # A few users' evidence gives a short vector: the new items rank inside their cluster but
    # mostly below its established items (docs/stream.md), so hits@10 are rare, not absent.
    assert new_items[ITEM_FOLDIN]["hit_rate"] > new_items[FOLDIN]["hit_rate"]
    assert new_items[RETRAIN_ITEM_FOLDIN]["hit_rate"] > new_items[RETRAIN_FOLDIN]["hit_rate"]
    assert overall[ITEM_FOLDIN]["hit_rate"] >= overall[FOLDIN]["hit_rate"]
    assert overall[RETRAIN_ITEM_FOLDIN]["hit_rate"] >= overall[RETRAIN_FOLDIN]["hit_rate"]
    assert "hit rate@10, new items" in replay.render_replay(result.to_json())


def test_item_fold_in_changes_nothing_when_every_item_is_known(clustered,
                                                               fast_settings) -> None:
    """Users seen before the cutoff keep their vectors in the item-folding variants (they once
    fell back to popularity there until their first replayed event)."""
    from evaluation.replay import ITEM_FOLDIN, RETRAIN_ITEM_FOLDIN

    first_half = clustered["timestamp"] < clustered["timestamp"].median()
    assert set(clustered.loc[first_half, "item_id"]) == set(clustered["item_id"])
    result = run_replay(clustered, fast_settings, k=10, n_buckets=2, retrains=1)
    before = result.by_user_kind["users seen before the cutoff"]
    assert before[FOLDIN]["n"] > 500
    for without, with_items in ((FOLDIN, ITEM_FOLDIN), (RETRAIN_FOLDIN, RETRAIN_ITEM_FOLDIN)):
        assert before[with_items] == before[without]
        assert result.overall[with_items] == result.overall[without]
