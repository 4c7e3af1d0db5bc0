"""A training run with `trainer_model_kind = neural`, against a real Redis: the version it
publishes carries the tower, loads as a neural ModelVersion, and its stored user vectors are
the tower's output on the users' histories (the stream's maths); the gate judges a neural
serving version by its own tower."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.keys import Keys
from recsys.modelstore import load_model, read_current_version, unpack_vector
from recsys.sequence_model import recent_items, to_rows
from trainer.publish import load_from_disk

pytest.importorskip("torch", reason="the neural extra is installed by make test")
pytestmark = pytest.mark.integration

NEURAL = dict(trainer_model_kind="neural", neural_dim=16, neural_window=10, neural_hidden=16,
              neural_epochs=2, neural_time_budget_s=30.0, trainer_fit_threads=1)


def test_neural_run_publishes_a_tower_version_whose_vectors_the_tower_reproduces(
        make_trainer, small_frame, redis_client, settings):
    keys = Keys(settings.redis_namespace)
    trainer = make_trainer(**NEURAL)
    trainer.store.append(small_frame)
    result = trainer.run_once()
    assert result.published, result.decision.reason
    manifest = result.manifest
    assert manifest["model_kind"] == "neural" and manifest["factors"] == 16
    assert manifest["tower"]["window"] == 10 and manifest["neural"]["epochs_run"] >= 1
    assert "ndcg@10" in manifest["metrics"]

    model = load_model(redis_client, keys)
    assert model.version == result.version == read_current_version(redis_client, keys)
    assert model.kind == "neural" and model.tower is not None
    on_disk = load_from_disk(settings.model_dir, result.version)
    assert on_disk.tower is not None and set(on_disk.tower) == set(model.tower.weights)

    # a user's stored vector == the tower on their history, ordered as the stream orders it
    frame = small_frame
    user = str(frame["user_id"].value_counts().index[0])
    mine = frame[frame["user_id"] == user]
    history: dict[str, list[float]] = {}
    for item, ts in zip(mine["item_id"].astype(str), mine["timestamp"], strict=True):
        entry = history.setdefault(item, [1.0, int(ts)])
        entry[1] = max(entry[1], int(ts))
    rows = to_rows([recent_items(history)], model.item_index, model.tower.window).rows[0]
    want = model.tower.user_vectors([rows])[0]
    raw = redis_client.hget(keys.user_vectors(model.version), user)
    got = unpack_vector(raw, model.factors)
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-4

    # the next run (ALS) is gated against the neural version, judged by its tower
    second = make_trainer()
    again = second.run_once()
    assert again.serving_version == result.version
    assert again.serving_metrics is not None and "ndcg@10" in again.serving_metrics


def walk_history(users: int = 400, n_items: int = 60, steps: int = 8, seed: int = 0
                 ) -> pd.DataFrame:
    """Users walking a ring of items one way (tests/recsys/test_neural_candidate.py): the
    order of events is the answer, which the tower learns and bag models cannot."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(users):
        start = int(rng.integers(n_items))
        for n in range(steps):
            rows.append((f"u{user}", f"i{(start + n) % n_items}",
                         1_735_689_600_000 + (n * users + user) * 60_000))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    frame["event_type"] = "transaction"
    frame["value"] = np.nan
    frame["event_id"] = [f"e{i}" for i in range(len(frame))]
    return frame


def test_a_selection_won_by_neural_publishes_a_neural_version(make_trainer, redis_client,
                                                               settings):
    keys = Keys(settings.redis_namespace)
    trainer = make_trainer(trainer_candidates=("als", "knn_cosine", "neural"),
                           neural_dim=16, neural_window=8, neural_hidden=32, neural_epochs=30,
                           neural_learning_rate=0.01, neural_dropout=0.1,
                           neural_time_budget_s=60.0, trainer_fit_threads=1)
    trainer.store.append(walk_history())
    result = trainer.run_once()
    assert result.published, result.decision.reason
    manifest = result.manifest
    assert manifest["selection"]["winner"] == "neural", manifest["selection"]["reason"]
    assert manifest["model_kind"] == "neural" and manifest["candidate"] == "neural"
    board = {e["name"]: e for e in manifest["selection"]["leaderboard"]}
    # the leaderboard shows it beside the others, on validation and on the holdout
    assert board["neural"]["kind"] == "neural" and board["neural"]["validation"]
    assert board["neural"]["holdout"]["ndcg@10"] > board["als"]["holdout"]["ndcg@10"]
    assert manifest["metrics"]["ndcg@10"] == pytest.approx(board["neural"]["holdout"]["ndcg@10"])
    assert manifest["tower"]["window"] == 8 and manifest["trained_until_ms"] < \
        manifest["snapshot"]["latest_event_ms"]
    model = load_model(redis_client, keys)
    assert model.version == result.version and model.kind == "neural"
    assert model.tower is not None and model.factors == 16
    served = trainer.metrics.registry.get_sample_value
    assert served("recsys_trainer_served_model", {"kind": "neural"}) == 1.0
    assert served("recsys_trainer_served_model", {"kind": "als"}) == 0.0
