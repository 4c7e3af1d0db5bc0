"""The neural user tower as a selection candidate (recsys.candidates.neural): chosen where the
order of events carries the answer, not where a user's items are a bag; skipped with a
reason when PyTorch is missing."""

from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys.candidates import FitContext, registry
from recsys.candidates.neural import NO_TORCH, restrict
from recsys.matrix import index_events, weight_matrix
from recsys.selection import SelectionConfig, select, training_sequences
from recsys.sequence_train import NeuralParams, NeuralUnavailable
from recsys.split import build_holdout

SMALL = NeuralParams(dim=16, window=8, hidden=32, epochs=30, learning_rate=0.01,
                     dropout=0.1, time_budget_s=60.0, threads=1)


def frame_of(pairs: list[tuple[int, int, int]]) -> pd.DataFrame:
    return pd.DataFrame({"user_id": [f"u{u}" for u, _, _ in pairs],
                         "item_id": [f"i{i}" for _, i, _ in pairs],
                         "event_type": "transaction", "value": np.nan,
                         "timestamp": [t for _, _, t in pairs]})


def walk_frame(seed: int = 0, n_items: int = 60, users: int = 400, steps: int = 8
               ) -> pd.DataFrame:
    """Each user walks a ring of items one way from a random start: the next items follow
    from the newest one, while the bag of a user's items says only "near these", on both
    ends of the walk."""
    rng = np.random.default_rng(seed)
    pairs = []
    for user in range(users):
        start = int(rng.integers(n_items))
        for n in range(steps):
            pairs.append((user, (start + n) % n_items, 1_000_000 + n * 1000 + user))
    return frame_of(pairs)


def bag_frame(seed: int = 0, n_items: int = 200, dim: int = 8, size: int = 40,
              users: int = 600) -> pd.DataFrame:
    """A low-rank taste (p(item) ~ exp(2 u.v / sqrt(dim)), random Gaussian u and v), the
    items in random order: a bag, where the whole history estimates the taste and the order
    says nothing. (Disjoint taste clusters are no such test: a few recent items name the
    cluster, and there every candidate, the tower included, reaches the same ceiling.)"""
    rng = np.random.default_rng(seed)
    items, tastes = rng.normal(size=(n_items, dim)), rng.normal(size=(users, dim))
    pairs = []
    for user in range(users):
        logits = 2.0 * items @ tastes[user] / np.sqrt(dim)
        p = np.exp(logits - logits.max())
        for n, item in enumerate(rng.choice(n_items, size=size, replace=False, p=p / p.sum())):
            pairs.append((user, int(item), 1_000_000 + n * 1000 + user))
    return frame_of(pairs)


def _select(frame: pd.DataFrame, candidates: tuple[str, ...]):  # noqa: ANN202
    events = index_events(frame, {"transaction": 1.0})
    train = np.ones(len(events), dtype=bool)
    return select(events, train, SelectionConfig(candidates=candidates, budget_s=120.0,
                                                 threads=1, neighbours=20, search=False,
                                                 neural=SMALL))


def test_selection_picks_neural_where_order_matters() -> None:
    pytest.importorskip("torch", reason="the neural extra is installed by make test")
    selection = _select(walk_frame(), ("als", "knn_cosine", "ease", "neural"))
    board = {e.name: e.score("ndcg@10") for e in selection.leaderboard}
    assert selection.winner == "neural", (selection.reason, board)
    others = max(v for name, v in board.items() if name != "neural")
    assert board["neural"] > 1.1 * others, board
    entry = selection.entry("neural")
    assert entry.kind == "neural" and entry.trials == 1 and entry.skipped is None


def test_selection_does_not_pick_neural_on_a_bag() -> None:
    pytest.importorskip("torch", reason="the neural extra is installed by make test")
    selection = _select(bag_frame(), ("als", "knn_cosine", "ease", "neural"))
    assert selection.winner == "als", selection.reason
    assert selection.entry("neural").validation  # it was scored, and lost


def test_without_torch_neural_is_skipped_and_the_rest_runs(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    selection = _select(bag_frame(), ("als", "neural"))
    assert selection.entry("neural").skipped == NO_TORCH
    assert selection.winner == "als", selection.reason
    # fitted by name (trainer_model_kind=neural), it says what to install
    with pytest.raises(NeuralUnavailable, match=r"\.\[neural\]"):
        registry.get("neural").fit(sp.csr_matrix((2, 2)), {}, FitContext(sequences=[[], []]))


def test_restrict_keeps_the_order_of_the_items_the_matrix_holds() -> None:
    matrix = sp.csr_matrix(np.array([[1, 0, 1, 1], [0, 0, 0, 0]], dtype=np.float32))
    assert restrict([[3, 1, 0, 2], [1]], matrix) == [[3, 0, 2], []]


def test_rank_leaves_out_seen_and_unknown_items_and_pads() -> None:
    pytest.importorskip("torch", reason="the neural extra is installed by make test")
    events = index_events(walk_frame(n_items=12, users=60, steps=5), {"transaction": 1.0})
    everything = np.ones(len(events), dtype=bool)
    train = weight_matrix(events, everything)
    ctx = FitContext(seed=1, threads=1, sequences=training_sequences(events, everything),
                     neural=replace(SMALL, epochs=2))
    model = registry.get("neural").fit(train, {}, ctx)
    users = np.arange(3)
    relevant = [next(i for i in range(4, 12) if train[u, i] == 0) for u in users]
    holdout = build_holdout(users, np.asarray(relevant), train, cutoff_ms=0)
    assert holdout.users.tolist() == users.tolist()
    allowed = holdout.allowed.copy()
    allowed[:4] = False
    holdout = replace(holdout, allowed=allowed)
    recs = model.rank(holdout, 12)
    for row, user in zip(recs, users, strict=True):
        got = row[row >= 0]
        seen = set(train[user].indices.tolist())
        assert not seen & set(got.tolist()) and (got >= 4).all()
        assert len(got) == 8 - len(seen - set(range(4)))  # every other item, then -1 pads
        assert (row[len(got):] == -1).all()
    export = model.export()
    assert export.kind == "neural" and export.item_factors.shape == (12, 16)
    assert export.tower is not None and np.isfinite(export.item_factors).all()
