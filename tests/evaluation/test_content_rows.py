"""recsys evaluate with item attributes: the cold-items protocol and the hybrid row."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.evaluate import EvaluationError, run_evaluation
from evaluation.protocols import make_split
from recsys.item_attributes import ItemAttributes
from recsys.matrix import index_events
from shell.cli import main


def _cluster_items(n_items: int = 200, n_clusters: int = 10) -> dict[str, ItemAttributes]:
    # clustered_frame's items: item i is in cluster i % n_clusters
    return {f"i{i}": ItemAttributes(item_id=f"i{i}", category_paths=((f"c{i % n_clusters}",),))
            for i in range(n_items)}


def test_cold_items_split_keeps_cold_items_out_of_training(clustered, fast_settings) -> None:
    events = index_events(clustered, fast_settings.event_weights)
    split = make_split("cold-items", events, 5.0, seed=42)
    cold = split.holdout.allowed
    n_present = len(np.unique(events.cols))
    assert cold.sum() == round(0.2 * n_present)
    assert not cold[events.cols[split.train_mask]].any()
    assert cold[events.cols[split.test_mask]].all()
    h = split.holdout
    assert h.n_users > 100 and cold[h.relevant.indices].all() and not cold[h.seen.indices].any()
    again = make_split("cold-items", events, 5.0, seed=42)
    assert np.array_equal(again.holdout.allowed, cold)  # seeded


def test_cold_items_rows_content_beats_random(clustered, fast_settings, tmp_path) -> None:
    report = run_evaluation(clustered, fast_settings, tmp_path, protocols=("cold-items",),
                            items=_cluster_items(), models=("als",))
    rows = report["protocols"]["cold-items"]["models"]
    assert set(rows) == {"random", "content", "content map (ridge)", "content map (knn)",
                         "hybrid"}
    floor = rows["random"]["ndcg@10"]
    for name in ("content", "hybrid", "content map (knn)"):
        assert rows[name]["ndcg@10"] > 3 * floor, (name, rows[name]["ndcg@10"], floor)
        assert rows[name]["ndcg_lo@10"] <= rows[name]["ndcg@10"] <= rows[name]["ndcg_hi@10"]
    assert "cold items: a random 20% of the items" in (tmp_path / "report.md").read_text()


def test_cold_items_without_items_is_an_error(clustered, fast_settings, tmp_path) -> None:
    with pytest.raises(EvaluationError, match="--items"):
        run_evaluation(clustered, fast_settings, tmp_path, protocols=("cold-items",),
                       models=("als",))


def test_time_protocol_gains_a_hybrid_row_never_below_als_by_choice(
        clustered, fast_settings, tmp_path) -> None:
    report = run_evaluation(clustered, fast_settings, tmp_path, protocols=("time",),
                            items=_cluster_items(), models=("popularity", "als"))
    rows = report["protocols"]["time"]["models"]
    assert {"ALS", "hybrid"} <= set(rows)
    assert 0.0 <= rows["hybrid"]["blend"] <= 1.0
    if rows["hybrid"]["blend"] == 0.0:  # weight 0 is plain ALS, row for row
        assert rows["hybrid"]["ndcg@10"] == rows["ALS"]["ndcg@10"]


def test_cli_items_spec_is_checked(tmp_path, capsys) -> None:
    data = tmp_path / "u.data"
    data.write_text("1\t1\t5\t881250949\n")
    with pytest.raises(SystemExit, match="needs --items"):
        main(["evaluate", "--source", f"movielens:{data}", "--out", str(tmp_path / "o"),
              "--protocol", "cold-items"])
    code = main(["evaluate", "--source", f"movielens:{data}", "--out", str(tmp_path / "o"),
                 "--items", "nope:x.csv"])
    assert code != 0
    assert "movielens:PATH" in capsys.readouterr().err
    code = main(["evaluate", "--source", f"movielens:{data}", "--out", str(tmp_path / "o"),
                 "--items", f"retailrocket:{tmp_path / 'x.csv'}"])
    assert code != 0
    assert "not found" in capsys.readouterr().err
