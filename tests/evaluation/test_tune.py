"""recsys tune: the search only ever sees the training part of the split."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from evaluation.protocols import make_split
from evaluation.tune import TuneError, run_tune, tune
from recsys.matrix import index_events

SPACE = {"factors": [8, 16], "regularization": [0.1, 5.0], "alpha": [1.0, 10.0],
         "iterations": [3, 8]}


@pytest.mark.parametrize("protocol", ["time", "stratified"])
def test_tune_never_touches_the_test_split(clustered, fast_settings, protocol) -> None:
    events = index_events(clustered, fast_settings.event_weights)
    outer = make_split(protocol, events, fast_settings.alpha)
    result = tune(events, outer.train_mask, protocol, space=SPACE, search="random", n_trials=2,
                  refine=False, folds=2)
    assert result.folds == 2
    train_positions = set(np.flatnonzero(outer.train_mask))
    test_positions = set(np.flatnonzero(outer.test_mask))
    used = set(result.fit_positions) | set(result.validation_positions)
    assert used and used <= train_positions
    assert not used & test_positions
    assert len(result.validation_positions) > 0 and result.n_validation_users > 0

    # Stronger: scramble every test event; the search must not notice.
    scrambled_cols = events.cols.copy()
    rng = np.random.default_rng(0)
    test_idx = np.flatnonzero(outer.test_mask)
    scrambled_cols[test_idx] = rng.integers(0, events.shape[1], len(test_idx))
    scrambled = replace(events, cols=scrambled_cols,
                        weights=events.weights * np.where(outer.test_mask, 7.0, 1.0))
    again = tune(scrambled, outer.train_mask, protocol, space=SPACE, search="random",
                 n_trials=2, refine=False, folds=2)
    assert [t.metrics for t in again.trials] == [t.metrics for t in result.trials]


def test_grid_search_covers_the_grid_and_picks_the_max(clustered, fast_settings) -> None:
    events = index_events(clustered, fast_settings.event_weights)
    outer = make_split("time", events, fast_settings.alpha)
    result = tune(events, outer.train_mask, "time", space=SPACE, search="grid", folds=1)
    points = {(t.factors, t.regularization, t.alpha, t.iterations) for t in result.trials}
    assert len(points) == 2 * 2 * 2 * 2
    best = result.best
    assert best.metrics["ndcg@10"] == max(t.metrics["ndcg@10"] for t in result.trials)
    # warm-started iterations: a trial's fit time accumulates over its iteration counts
    by_point = [t for t in result.trials if (t.factors, t.regularization, t.alpha)
                == (best.factors, best.regularization, best.alpha)]
    assert by_point[0].fit_seconds <= by_point[1].fit_seconds


def test_run_tune_writes_report_and_best_params(clustered, fast_settings, tmp_path) -> None:
    result = run_tune(clustered, fast_settings, tmp_path, "time", source="clustered",
                      space=SPACE, n_trials=2, refine=True, folds=1)
    best = json.loads((tmp_path / "best_params.json").read_text())
    assert best["time"] == result.best.hyper()
    assert set(result.test) == {"best (tuned)", "settings"}
    assert 0.0 <= result.test["best (tuned)"]["ndcg@10"] <= 1.0
    md = (tmp_path / "tune_time.md").read_text()
    assert "never read during the search" in md and "**Best**" in md
    for axis in ("factors", "regularization", "alpha", "iterations"):
        assert (tmp_path / f"tune_time_{axis}.png").stat().st_size > 3_000
    assert json.loads((tmp_path / "tune_time.json").read_text())["protocol"] == "time"


def test_bad_space_and_metric_are_rejected(clustered, fast_settings) -> None:
    events = index_events(clustered, fast_settings.event_weights)
    mask = np.ones(len(events), dtype=bool)
    with pytest.raises(TuneError):
        tune(events, mask, "time", space={**SPACE, "factors": []})
    with pytest.raises(TuneError):
        tune(events, mask, "time", space=SPACE, metric="auc@10")


def test_cli_tune(tmp_path, capsys) -> None:
    from shell.cli import main

    code = main(["tune", "--source", "synthetic", "--events", "8000", "--out", str(tmp_path),
                 "--trials", "2", "--folds", "1", "--no-refine", "--no-progress",
                 "--factors", "8", "--regularization", "1,10", "--alpha", "5",
                 "--iterations", "4"])
    assert code == 0
    out = capsys.readouterr().out
    assert "best on the time validation split" in out and "test split, settings" in out
    best = json.loads((tmp_path / "best_params.json").read_text())["time"]
    assert best["factors"] == 8 and best["regularization"] in (1.0, 10.0)


def test_cli_tune_candidates_is_the_trainers_search(tmp_path, capsys) -> None:
    from shell.cli import main

    code = main(["tune", "--source", "synthetic", "--events", "8000", "--out", str(tmp_path),
                 "--candidates", "als,knn_cosine", "--budget", "30"])
    assert code == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "candidates_time.json").read_text())
    names = [row["name"] for row in report["candidates"]]
    assert names == ["popularity", "als", "knn_cosine"]
    assert report["winner"] in names and report["winner"] in out
    for row in report["candidates"]:  # validation to choose, the test split only reported
        assert row["validation"]["ndcg@10"] >= 0 and row["test"]["ndcg@10"] >= 0
