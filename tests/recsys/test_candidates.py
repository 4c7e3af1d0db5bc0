"""Every candidate's contract on a tiny dataset with a known answer (one mixin, run against
each registered candidate, like implicit's shared model tests), plus selection and tuning."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys.candidates import (
    KIND_ITEM_ITEM,
    KIND_NEURAL,
    KIND_POPULARITY,
    FitContext,
    registry,
)
from recsys.candidates.neighbours import score_items, tie_break
from recsys.candidates.stored import from_arrays
from recsys.matrix import index_events, weight_matrix
from recsys.quality import UserItems
from recsys.selection import SelectionConfig, retune_reason, select
from recsys.split import build_holdout

N_ITEMS = 8
# Two tastes: items 0-3 and items 4-7. Every user has three items of their taste; item 7 is
# the most popular overall (12 users). Counts differ item by item, so no scores tie.
HISTORIES = ([[0, 1, 2]] * 4 + [[0, 1, 3]] * 3 + [[0, 2, 3]] * 2 + [[1, 2, 3]]
             + [[4, 5, 7]] + [[5, 6, 7]] * 9 + [[4, 6, 7]] * 2)
# small data: ALS needs little regularisation and few factors to learn two tastes
TINY_PARAMS = {"als": {"factors": 2, "regularization": 1.0, "alpha": 10.0, "iterations": 15}}


def tiny_matrix() -> sp.csr_matrix:
    rows = [u for u, items in enumerate(HISTORIES) for _ in items]
    cols = [i for items in HISTORIES for i in items]
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(HISTORIES), N_ITEMS))


def holdout_for(train: sp.csr_matrix, seen: list[list[int]]):
    """Test users given by their training items (appended as new rows)."""
    extra = sp.csr_matrix((np.ones(sum(map(len, seen))),
                           ([u for u, items in enumerate(seen) for _ in items],
                            [i for items in seen for i in items])), shape=(len(seen), N_ITEMS))
    full = sp.vstack([train, extra]).tocsr()
    users = np.arange(train.shape[0], full.shape[0])
    # a relevant item per user that is not seen: any will do, ranking is what is tested
    rel = [next(i for i in range(N_ITEMS) if i not in items) for items in seen]
    return full, build_holdout(users, np.asarray(rel), full, cutoff_ms=0)


CTX = FitContext(seed=1, threads=1, neighbours=4)
# the neural candidate also needs the events' order: its contract is in
# test_neural_candidate.py
PERSONALISED = [name for name in registry.names()
                if registry.get(name).kind not in (KIND_POPULARITY, KIND_NEURAL)]


class CandidateContract:
    name: str

    def fit(self):
        spec = registry.get(self.name)
        params = {**spec.defaults, **TINY_PARAMS.get(self.name, {})}
        return spec, spec.fit(tiny_matrix(), params, CTX)

    def test_ranks_unseen_allowed_items_only_with_padding(self) -> None:
        _, model = self.fit()
        full, holdout = holdout_for(tiny_matrix(), [[0, 1, 2, 3, 4, 5]])
        recs = model.rank(holdout, 5)
        assert recs.shape == (1, 5)
        got = recs[0][recs[0] >= 0]
        assert set(got.tolist()) == {6, 7}  # only two unseen items exist
        assert (recs[0][2:] == -1).all()

    def test_export_matches_its_kind(self) -> None:
        spec, model = self.fit()
        export = model.export()
        assert export.kind == spec.kind == model.kind
        assert len(export.item_scores) == N_ITEMS and np.isfinite(export.item_scores).all()
        if export.kind == KIND_ITEM_ITEM:
            assert export.neighbour_rows.shape == export.neighbour_weights.shape
            assert export.neighbour_rows.dtype == np.int32
            assert export.neighbour_weights.dtype == np.float32
            assert ((export.neighbour_rows >= -1) & (export.neighbour_rows < N_ITEMS)).all()
            own = export.neighbour_rows == np.arange(N_ITEMS)[:, None]
            assert not own.any()  # an item is never its own neighbour
        elif export.kind != KIND_POPULARITY:
            assert export.item_factors.shape[0] == N_ITEMS
            assert np.isfinite(export.item_factors).all()

    def test_a_stored_copy_ranks_like_the_model(self) -> None:
        _, model = self.fit()
        export = model.export()
        ids = np.array([f"i{i}" for i in range(N_ITEMS)])
        arrays = {"item_ids": ids, "item_scores": export.item_scores}
        if export.item_factors is not None:
            arrays["item_factors"] = export.item_factors
        if export.neighbour_rows is not None:
            arrays.update(neighbour_rows=export.neighbour_rows,
                          neighbour_weights=export.neighbour_weights)
        manifest = {"model_kind": export.kind, **export.manifest}
        # the target index holds the items in another order, plus one the model never saw
        target = np.array(["new", *ids[::-1]])
        stored, known = from_arrays(manifest, arrays, target)
        assert known.tolist() == [False] + [True] * N_ITEMS
        _, holdout = holdout_for(tiny_matrix(), [[0, 1], [4, 5]])
        mine = model.rank(holdout, 3)
        remap = {N_ITEMS - 1 - i + 1: i for i in range(N_ITEMS)}
        # the same users and histories, in the target's columns
        moved = replace(holdout, seen=UserItems(holdout.seen.indptr,
                                                N_ITEMS - holdout.seen.indices),
                        allowed=known.copy())
        theirs = stored.rank(moved, 3)
        assert [[remap[c] for c in row if c >= 0] for row in theirs] == \
            [[c for c in row if c >= 0] for row in mine]


class PersonalisedContract(CandidateContract):
    def test_known_answer_completes_the_taste(self) -> None:
        _, model = self.fit()
        _, holdout = holdout_for(tiny_matrix(), [[0, 1], [4, 5]])
        recs = model.rank(holdout, 2)
        # two items of taste A seen: the other two of A come first, not popular item 7
        assert set(recs[0].tolist()) == {2, 3}
        assert set(recs[1].tolist()) == {6, 7}


@pytest.mark.parametrize("name", PERSONALISED)
class TestPersonalised(PersonalisedContract):
    @pytest.fixture(autouse=True)
    def _name(self, name: str) -> None:
        self.name = name


class TestPopularity(CandidateContract):
    name = "popularity"

    def test_known_answer_is_the_most_popular_unseen_item(self) -> None:
        _, model = self.fit()
        _, holdout = holdout_for(tiny_matrix(), [[0, 1]])
        assert model.rank(holdout, 1)[0, 0] == 7  # 12 users hold item 7


def test_ease_is_skipped_above_its_item_bound() -> None:
    spec = registry.get("ease")
    assert spec.skip((10, 5), FitContext(max_items=4)).startswith("5 items")
    with pytest.raises(ValueError, match="not applicable"):
        spec.fit(tiny_matrix(), {}, FitContext(max_items=4))


def test_item_item_scoring_sums_neighbour_weights_of_the_history() -> None:
    rows = np.array([[1, 2], [2, -1], [0, 1]], dtype=np.int32)
    weights = np.array([[0.5, 0.25], [1.0, 0.0], [2.0, -1.0]], dtype=np.float32)
    bias = tie_break(np.array([3.0, 2.0, 1.0]))
    got = score_items(np.array([0, 2]), rows, weights, bias)
    # row 0 -> (1: .5, 2: .25); row 2 -> (0: 2, 1: -1)
    np.testing.assert_allclose(got, [2.0, -0.5, 0.25], atol=1e-6)
    assert score_items(np.array([], dtype=int), rows, weights, bias).argmax() == 0


# --- selection ------------------------------------------------------------------------------
def frame_of(pairs: list[tuple[int, int, int]]) -> pd.DataFrame:
    return pd.DataFrame({"user_id": [f"u{u}" for u, _, _ in pairs],
                         "item_id": [f"i{i}" for _, i, _ in pairs],
                         "event_type": "transaction", "value": np.nan,
                         "timestamp": [t for _, _, t in pairs]})


def no_taste_frame(seed: int = 0) -> pd.DataFrame:
    """Every user buys from one skewed distribution, independently of who they are: nothing
    personal to learn, so no candidate can beat popularity."""
    rng = np.random.default_rng(seed)
    n_items = 40
    p = 1.0 / np.arange(1, n_items + 1) ** 1.2
    p /= p.sum()
    pairs = []
    for user in range(400):
        for n, item in enumerate(rng.choice(n_items, size=8, p=p, replace=False)):
            pairs.append((user, int(item), 1_000_000 + n * 1000 + user))
    return frame_of(pairs)


def taste_frame(seed: int = 0) -> pd.DataFrame:
    """Users with one of four disjoint tastes: personal models win by far."""
    rng = np.random.default_rng(seed)
    pairs = []
    for user in range(400):
        taste = user % 4
        for n, item in enumerate(rng.choice(10, size=6, replace=False)):
            pairs.append((user, taste * 10 + int(item), 1_000_000 + n * 1000 + user))
    return frame_of(pairs)


def _select(frame: pd.DataFrame, **config) -> object:
    events = index_events(frame, {"transaction": 1.0})
    train = np.ones(len(events), dtype=bool)
    return select(events, train, SelectionConfig(**{"budget_s": 20.0, "threads": 1,
                                                   "neighbours": 20, **config}))


def test_selection_picks_popularity_when_nothing_beats_it() -> None:
    selection = _select(no_taste_frame(), candidates=("als", "knn_cosine", "ease"))
    assert selection.winner == "popularity", selection.reason
    pop = selection.entry("popularity").score("ndcg@10")
    # none is clearly better: within the 1 % a personal model must win by
    assert all(e.score("ndcg@10") <= 1.01 * pop for e in selection.leaderboard)
    assert "no candidate beats popularity" in selection.reason


def test_selection_picks_a_personal_model_when_there_is_taste() -> None:
    selection = _select(taste_frame(), candidates=("als", "knn_cosine", "ease"))
    assert selection.winner != "popularity"
    assert selection.winning.score("ndcg@10") > 1.5 * selection.entry(
        "popularity").score("ndcg@10")
    # every candidate has a row with its settings and validation metrics
    assert {e.name for e in selection.leaderboard} == {"popularity", "als", "knn_cosine",
                                                       "ease"}
    assert all(e.validation and e.trials >= 1 for e in selection.leaderboard)


def test_tuning_respects_its_budget() -> None:
    frame = taste_frame(1)
    started = time.perf_counter()
    # a budget far below the whole search's time (which stops early on this small frame)
    selection = _select(frame, candidates=("als", "knn_bm25", "ease"), budget_s=0.05)
    took = time.perf_counter() - started
    # the start points are always scored; the search stops at the budget (plus at most the
    # trial that was running, which the prediction keeps short)
    assert took < 0.05 + 2.0, took
    assert selection.seconds <= took
    unbounded = _select(frame, candidates=("als", "knn_bm25", "ease"), budget_s=120.0)
    assert sum(e.trials for e in unbounded.leaderboard) > \
        sum(e.trials for e in selection.leaderboard)


def test_a_search_step_inside_the_margin_does_not_move_a_candidate() -> None:
    candidates = ("als", "knn_bm25", "ease")
    # with no margin the search moves at least one candidate off its defaults on this data
    free = _select(taste_frame(), candidates=candidates, min_lift=0.0)
    assert any(free.entry(n).params != dict(registry.get(n).defaults) for n in candidates)
    # a margin no step can clear: every candidate keeps its start point, though steps ran
    held = _select(taste_frame(), candidates=candidates, min_lift=10.0)
    for name in candidates:
        assert held.entry(name).params == dict(registry.get(name).defaults), name
    assert sum(held.entry(n).trials for n in candidates) > len(candidates)


def test_selection_on_a_single_user_or_item_is_popularity_not_a_crash() -> None:
    one_user = frame_of([(0, i, 1000 + i) for i in range(10)])
    assert _select(one_user).winner == "popularity"
    one_item = frame_of([(u, 0, 1000 + u) for u in range(10)])
    assert _select(one_item).winner == "popularity"


def test_retune_when_grown_or_due_else_reuse() -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime(2026, 1, 10, tzinfo=UTC)
    record = {"n_events": 1000, "tuned_at": (now - timedelta(days=1)).isoformat(),
              "params": {"als": {"factors": 32}}}
    assert retune_reason(None, 10, 1.5, 7, now) == "no previous tuning"
    assert retune_reason(record, 1200, 1.5, 7, now) is None
    assert "grew" in retune_reason(record, 1500, 1.5, 7, now)
    assert "days ago" in retune_reason(record, 1200, 1.5, 0.5, now)


def test_without_search_the_warm_points_are_scored_as_they_are() -> None:
    events = index_events(taste_frame(), {"transaction": 1.0})
    warm = {"als": {"factors": 8, "regularization": 1.0, "alpha": 2.0, "iterations": 3},
            "ease": {"lambda": 50.0}}
    selection = select(events, np.ones(len(events), dtype=bool),
                       SelectionConfig(candidates=("als", "ease"), search=False, threads=1,
                                       neighbours=20), warm)
    assert selection.entry("als").params == warm["als"]
    assert selection.entry("ease").params == warm["ease"]
    assert all(e.trials == 1 for e in selection.leaderboard)


def test_one_candidate_without_search_is_chosen_without_a_validation_fit() -> None:
    events = index_events(no_taste_frame(), {"transaction": 1.0})
    train = np.ones(len(events), dtype=bool)
    warm = {"als": {"factors": 8, "regularization": 1.0, "alpha": 2.0, "iterations": 3}}
    single = SelectionConfig(candidates=("popularity", "als"), search=False, threads=1)
    selection = select(events, train, single, warm)
    # nothing to choose: the candidate at its point wins with no carve and no fit (this
    # data has no taste, where a validation carve picks popularity: the caller's holdout
    # check is what keeps popularity then)
    assert selection.winner == "als", selection.reason
    assert selection.validation == "none" and selection.n_validation_users == 0
    assert selection.entry("als").params == warm["als"]
    assert all(e.trials == 0 and not e.validation for e in selection.leaderboard)
    assert select(events, train, replace(single, search=True)).winner == "popularity"
    # two candidates, or a search: the validation decides as before
    two = select(events, train, replace(single, candidates=("als", "ease")), warm)
    assert two.validation == "time" and two.winner == "popularity"
    one_user = index_events(frame_of([(0, i, 1000 + i) for i in range(10)]),
                            {"transaction": 1.0})
    tiny = select(one_user, np.ones(len(one_user), dtype=bool), single)
    assert tiny.winner == "popularity" and "nothing personal" in tiny.reason


def test_weight_matrix_is_what_candidates_fit_on() -> None:
    events = index_events(taste_frame(), {"transaction": 2.0})
    assert weight_matrix(events).data.max() == 2.0
