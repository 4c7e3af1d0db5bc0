"""`recsys evaluate --reference cornac-bpr`: an external library's row on the same split, in
the same run, and every row's NDCG as a ratio to it."""

from __future__ import annotations

import json

import pytest

from evaluation.evaluate import run_evaluation
from evaluation.references import REFERENCES, Reference, ReferenceRowError, check_available
from shell.cli import main


def test_cornac_bpr_row_and_ratios_on_the_same_split(clustered, fast_settings, tmp_path) -> None:
    pytest.importorskip("cornac", reason="the 'reference' extra is not installed")
    report = run_evaluation(clustered, fast_settings, tmp_path, k=10,
                            protocols=("stratified",), references=("cornac-bpr",))
    entry = report["protocols"]["stratified"]
    models = entry["models"]
    row = "cornac BPR (reference)"
    assert set(models) == {"popularity", "item-kNN", "ALS", "selected", row}
    for key in ("ndcg@10", "precision@10", "recall@10", "map_ms@10"):
        assert 0.0 <= models[row][key] <= 1.0
    # each user likes one cluster: a personalised pairwise model is far above popularity
    assert models[row]["ndcg@10"] > 1.5 * models["popularity"]["ndcg@10"]
    ratios = entry["ndcg_ratio_to_reference"][row]
    assert set(ratios) == {"popularity", "item-kNN", "ALS", "selected"}
    for name, ratio in ratios.items():
        assert ratio == pytest.approx(models[name]["ndcg@10"] / models[row]["ndcg@10"])
    assert "cornac 3.0.1 BPR" in entry["references"][row]
    md = (tmp_path / "report.md").read_text()
    assert f"| {row} |" in md and "NDCG@10 relative to it: popularity" in md
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["protocols"]["stratified"]["models"][row]["ndcg@10"] == models[row]["ndcg@10"]


def test_a_missing_library_is_a_clear_error_before_any_fit(monkeypatch, clustered,
                                                           fast_settings, tmp_path) -> None:
    monkeypatch.setitem(REFERENCES, "absent", Reference(
        name="absent", row="absent", library="no_such_library_for_recsys_tests",
        describe="", rank=lambda *_: None))
    with pytest.raises(ReferenceRowError, match="no_such_library.*streaming-recsys\\[reference\\]"):
        check_available(["absent"])
    with pytest.raises(ReferenceRowError, match="needs the optional library"):
        run_evaluation(clustered, fast_settings, tmp_path, references=("absent",))
    assert not (tmp_path / "metrics.json").exists()  # nothing was evaluated


def test_cli_names_the_known_references(tmp_path, capsys) -> None:
    code = main(["evaluate", "--source", "synthetic", "--events", "2000", "--reference",
                 "lightfm", "--out", str(tmp_path)])
    assert code == 1
    err = capsys.readouterr().err
    assert "unknown reference 'lightfm'" in err and "cornac-bpr" in err
