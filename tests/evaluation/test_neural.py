"""The neural user tower in `recsys evaluate` and the replay: a `neural` row on every
protocol, a `neural` replay variant computed by the stream's own calls, and on ML-100K's
replay a quality check that can fail."""

from __future__ import annotations

import pytest

import recsys.userstate
from evaluation import replay
from evaluation.evaluate import run_evaluation
from evaluation.replay import FOLDIN, NEURAL, POPULARITY, STATIC, run_replay
from recsys.sequence_train import NeuralParams
from recsys.settings import load_settings
from recsys.sources.movielens import load_movielens
from shell.cli import main

pytest.importorskip("torch", reason="the neural extra is installed by make test")

QUICK = dict(neural_dim=16, neural_window=10, neural_hidden=16, neural_epochs=8,
             neural_learning_rate=0.01, trainer_fit_threads=1)


def test_neural_row_on_every_protocol(clustered, fast_settings, tmp_path) -> None:
    settings = fast_settings.model_copy(update=QUICK)
    report = run_evaluation(clustered, settings, tmp_path, k=10,
                            protocols=("time", "stratified"), models=("popularity", "neural"))
    for protocol, entry in report["protocols"].items():
        models = entry["models"]
        assert set(models) == {"popularity", "neural"}, protocol
        assert 0.0 <= models["neural"]["ndcg@10"] <= 1.0
        assert models["neural"]["fit_seconds"] > 0
        # each user likes one cluster: the tower must find it from their items
        assert models["neural"]["ndcg@10"] > 1.5 * models["popularity"]["ndcg@10"], protocol
    assert report["neural_settings"]["window"] == 10
    assert "self-attention user tower" in (tmp_path / "report.md").read_text()


def test_cli_rejects_unknown_models(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["evaluate", "--source", "synthetic", "--events", "2000", "--models",
              "als,gpt", "--out", str(tmp_path)])
    assert "unknown model" in capsys.readouterr().err


def test_replay_neural_variant_uses_the_stream_calls(clustered, fast_settings) -> None:
    assert replay.tower_inputs is recsys.userstate.tower_inputs
    params = NeuralParams(dim=16, window=10, hidden=16, epochs=8, learning_rate=0.01,
                          threads=1)
    result = run_replay(clustered, fast_settings, k=10, train_fraction=0.5, n_buckets=2,
                        retrains=0, neural=params)
    overall = result.overall
    assert overall[NEURAL]["n"] == result.n_targets > 100
    assert overall[NEURAL]["hit_rate"] > 1.5 * overall[POPULARITY]["hit_rate"]
    assert set(result.buckets[0]["variants"]) == set(overall) and STATIC in overall


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_neural_beats_static_plus_fold_in_on_the_ml100k_replay(ml100k_path) -> None:
    """Next new item of each user, in time order: the tower over the stream's history must
    predict it better than ALS folded in per event (the stream as it is without it)."""
    settings = load_settings(trainer_fit_threads=1)
    params = NeuralParams(epochs=4, threads=1, seed=settings.random_seed)
    result = run_replay(load_movielens(ml100k_path), settings, k=10, train_fraction=0.7,
                        n_buckets=2, retrains=0, neural=params)
    overall = result.overall
    assert overall[NEURAL]["hit_rate"] > overall[FOLDIN]["hit_rate"]
    assert overall[NEURAL]["hit_rate"] > overall[POPULARITY]["hit_rate"]


def test_the_selected_row_ranks_with_a_neural_winner(tmp_path) -> None:
    """`selected` refits the winner on the split's training part: a neural winner gets the
    training events' order as the selection did."""
    from evaluation.evaluate import evaluate_selected, selection_config
    from evaluation.protocols import make_split
    from recsys.matrix import index_events
    from tests.trainer.test_neural import walk_history

    settings = load_settings().model_copy(update=dict(
        trainer_candidates=("als", "neural"), neural_dim=16, neural_window=8,
        neural_hidden=32, neural_epochs=30, neural_learning_rate=0.01, neural_dropout=0.1,
        trainer_fit_threads=1))
    events = index_events(walk_history(), {"transaction": 1.0})
    split = make_split("time", events, 10.0, holdout_fraction=0.2, seed=42)
    row, record = evaluate_selected(split, events, 10, selection_config(settings, "time", 10))
    assert record["winner"] == "neural", record["reason"]
    assert row["ndcg@10"] > 0.5
