"""recsys evaluate: files, sane values, the protocols, RMSE on ML-100K."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from evaluation.evaluate import map_ms_at_k, rating_rmse, run_evaluation
from evaluation.protocols import make_split
from recsys.matrix import index_events
from recsys.quality import UserItems
from recsys.settings import load_settings
from recsys.sources.movielens import load_movielens
from shell.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_writes_metrics_report_and_charts(clustered, fast_settings, tmp_path) -> None:
    report = run_evaluation(clustered, fast_settings, tmp_path, k=10,
                            protocols=("time", "stratified"), source="clustered")
    for name in ("metrics.json", "report.md", "metrics_time.png", "metrics_stratified.png"):
        assert (tmp_path / name).exists(), name
    for name in ("metrics_time.png", "metrics_stratified.png"):
        assert (tmp_path / name).read_bytes().startswith(PNG_MAGIC)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["protocols"].keys() == {"time", "stratified"}
    for protocol, entry in saved["protocols"].items():
        models = entry["models"]
        assert set(models) == {"popularity", "item-kNN", "ALS", "selected"}
        # intra-list diversity next to NDCG, in every row
        assert all("ild@10" in values for values in models.values()), protocol
        for model, values in models.items():
            for key, value in values.items():
                if "@" in key:
                    assert 0.0 <= value <= 1.0, (protocol, model, key, value)
        # each user likes one cluster: personalised models must beat popularity by far
        assert models["ALS"]["ndcg@10"] > 2 * models["popularity"]["ndcg@10"], protocol
        assert models["item-kNN"]["ndcg@10"] > 2 * models["popularity"]["ndcg@10"], protocol
        # what the trainer would serve: chosen by its own code, and personal here
        assert entry["selected"]["winner"] != "popularity", entry["selected"]["reason"]
        assert models["selected"]["ndcg@10"] > 2 * models["popularity"]["ndcg@10"], protocol
        names = {row["name"] for row in entry["selected"]["leaderboard"]}
        assert names == set(fast_settings.trainer_candidates)
        assert entry["n_test_users"] > 100
    md = (tmp_path / "report.md").read_text()
    assert "time split: the last 20% of events" in md
    assert "ild@10" in md
    assert "python_stratified_split" in md
    assert "`selected`: what `recsys train` would serve" in md
    assert report["protocols"]["time"]["cutoff"]


def test_tuned_params_add_a_row(clustered, fast_settings, tmp_path) -> None:
    tuned = {"time": {"factors": 8, "regularization": 5.0, "alpha": 2.0, "iterations": 5}}
    report = run_evaluation(clustered, fast_settings, tmp_path, protocols=("time",),
                            tuned=tuned)
    entry = report["protocols"]["time"]
    assert "ALS (tuned)" in entry["models"]
    assert entry["als_tuned"]["factors"] == 8


def test_cli_evaluate_on_synthetic(tmp_path, capsys) -> None:
    code = main(["evaluate", "--source", "synthetic", "--events", "20000", "--seed", "3",
                 "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "| popularity |" in out and "| ALS |" in out
    assert "ndcg@10" in out and "ild@10" in out  # diversity printed next to accuracy
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["dataset"]["events"] == 20_000
    assert saved["protocols"]["time"]["models"]["ALS"]["ndcg@10"] > 0.0


def test_map_ms_divides_by_all_relevant_items() -> None:
    recs = np.array([[0, 5, 1]])
    relevant = UserItems(np.array([0, 4]), np.array([0, 1, 7, 8]))
    # hits at ranks 1 and 3: AP = (1/1 + 2/3) / 4 (all four relevant items)
    assert map_ms_at_k(recs, relevant, 3) == pytest.approx((1 + 2 / 3) / 4)


def test_stratified_split_keeps_every_user_in_both_parts(clustered, fast_settings) -> None:
    events = index_events(clustered, fast_settings.event_weights)
    split = make_split("stratified", events, 2.0)
    assert split.holdout.n_users == events.shape[0]
    assert not (split.train_mask & split.test_mask).any()
    assert (split.train_mask | split.test_mask).all()
    share = split.train_mask.mean()
    assert 0.72 < share < 0.78


def test_rmse_predictor_beats_global_mean_on_ml100k(ml100k_path) -> None:
    frame = load_movielens(ml100k_path)
    settings = load_settings()
    events = index_events(frame, settings.event_weights)
    split = make_split("stratified", events, settings.alpha)
    result = rating_rmse(frame, events, split)
    assert result is not None and result["n_test"] > 20_000
    rmse = result["rmse"]
    assert rmse["biased MF (ALS-WR)"] < rmse["user/item bias"] < rmse["global mean"]
    assert rmse["global mean"] > 1.05
    assert rmse["biased MF (ALS-WR)"] < 0.95


def test_models_below_popularity_are_flagged() -> None:
    from evaluation.evaluate import floor_warnings

    models = {"popularity": {"ndcg@10": 0.2}, "ALS": {"ndcg@10": 0.1},
              "item-kNN": {"ndcg@10": 0.3}}
    warnings = floor_warnings(models, 10)
    assert len(warnings) == 1 and warnings[0].startswith("ALS is below popularity")


def test_bootstrap_interval_brackets_the_mean() -> None:
    from evaluation.evaluate import bootstrap_ci
    from recsys.quality import ranking_metrics

    rng = np.random.default_rng(0)
    n_users, n_items = 200, 50
    recs = np.stack([rng.permutation(n_items)[:10] for _ in range(n_users)])
    relevant = UserItems.from_lists([rng.choice(n_items, 5, replace=False)
                                     for _ in range(n_users)])
    mean = ranking_metrics(recs, relevant, 10, n_items)["ndcg@10"]
    lo, hi = bootstrap_ci(recs, relevant, 10, n_items, "ndcg@10")
    assert lo < mean < hi and hi - lo < 0.2


def _day_first_csv(path, events: int = 20_000) -> None:
    from recsys.sources import synthetic

    frame = synthetic.generate(events, seed=5)
    dates = pd.to_datetime(frame["timestamp"], unit="ms", utc=True)
    pd.DataFrame({"member": frame["user_id"], "product": frame["item_id"],
                  "action": frame["event_type"],
                  "when": dates.dt.strftime("%d/%m/%Y %H:%M:%S")}).to_csv(path, index=False)


def test_cli_evaluate_reads_a_day_first_csv(tmp_path, capsys) -> None:
    path = tmp_path / "shop.csv"
    _day_first_csv(path)
    mapping = ["--map", "user_id=member,item_id=product,event_type=action,timestamp=when",
               "--timestamp-format", "%d/%m/%Y %H:%M:%S"]
    code = main(["evaluate", "--source", f"csv:{path}", *mapping, "--out", str(tmp_path / "o")])
    assert code == 0
    saved = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert saved["dataset"]["events"] == 20_000
    assert saved["protocols"]["time"]["models"]["ALS"]["ndcg@10"] > 0.0
    capsys.readouterr()
    # month-first dates in one row: the command fails with the row and value, no traceback
    lines = path.read_text().splitlines()
    member, product, action, when = lines[7].split(",")
    _day, month, rest = when.split("/", 2)
    lines[7] = f"{member},{product},{action},{month}/31/{rest}"  # month 31: no such date
    path.write_text("\n".join(lines) + "\n")
    code = main(["evaluate", "--source", f"csv:{path}", *mapping, "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert "does not match the format" in err and "first at data row 7 (line 8)" in err
