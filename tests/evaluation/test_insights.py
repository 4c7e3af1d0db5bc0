"""recsys insights: every chart and the page, with numbers that match the frame."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from evaluation.insights import (
    CHARTS,
    InsightsError,
    compute_insights,
    gini,
    head_share,
    write_insights,
)
from recsys.sources import make_frame
from recsys.sources.synthetic import generate

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def shop() -> pd.DataFrame:
    return generate(20_000, seed=3)


def test_writes_every_chart_and_the_page(shop: pd.DataFrame, tmp_path) -> None:
    paths = write_insights(shop, tmp_path, source="synthetic")
    expected = set(CHARTS) - {"ratings.png"}  # the synthetic shop has no ratings
    assert expected <= set(paths)
    for name in expected:
        data = (tmp_path / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5_000, name
    page = (tmp_path / "index.html").read_text()
    markdown = (tmp_path / "insights.md").read_text()
    for name in expected:
        assert f"src='{name}'" in page
        assert f"]({name})" in markdown
    stats = json.loads((tmp_path / "insights.json").read_text())
    assert stats["summary"]["events"] == len(shop)


def test_funnel_and_counts_match_the_frame(shop: pd.DataFrame) -> None:
    stats = compute_insights(shop)
    counts = shop["event_type"].value_counts()
    assert stats.events_per_type == {t: int(counts[t]) for t in stats.events_per_type}
    assert dict(stats.funnel_events) == {
        "view": counts["view"], "addtocart": counts["addtocart"],
        "transaction": counts["transaction"]}
    buyers = shop.loc[shop.event_type == "transaction", "user_id"].nunique()
    assert dict(stats.funnel_visitors)["transaction"] == buyers
    # Retailrocket's shape: views dominate, a few percent are carted, a third of carts bought
    assert 0.005 < stats.summary["cart_per_view"] < 0.1
    assert 0.1 < stats.summary["transaction_per_cart"] < 0.7
    # long tail: the top fifth of the items hold most of the traffic
    assert stats.summary["top_20pct_items_event_share"] > 0.5
    top_viewed = stats.top_items["most viewed"]
    assert top_viewed.iloc[0] == shop.loc[shop.event_type == "view", "item_id"].value_counts().max()
    assert stats.daily.to_numpy().sum() == len(shop)


def test_ratings_source_gets_rating_chart_and_empty_funnel(tmp_path) -> None:
    rng = np.random.default_rng(0)
    n = 300
    frame = make_frame(user_id=rng.integers(0, 20, n), item_id=rng.integers(0, 50, n),
                       event_type="rating", timestamp=1_000_000_000_000 + np.arange(n) * 60_000,
                       value=rng.integers(1, 6, n))
    paths = write_insights(frame, tmp_path, source="ratings")
    assert "ratings.png" in paths and (tmp_path / "ratings.png").stat().st_size > 5_000
    assert (tmp_path / "funnel.png").exists()  # says "no funnel" instead of going missing
    stats = compute_insights(frame)
    assert sum(stats.ratings.values()) == n
    assert "most rated" in stats.top_items
    assert "cart_per_view" not in stats.summary


def test_gini_and_head_share() -> None:
    assert gini(np.ones(10)) == pytest.approx(0.0)
    assert gini(np.array([0, 0, 0, 10])) == pytest.approx(0.75)
    assert head_share(np.array([80, 10, 5, 5, 0]), 0.2) == pytest.approx(0.8)


def test_rejects_a_non_frame(tmp_path) -> None:
    with pytest.raises(InsightsError):
        compute_insights(pd.DataFrame({"user_id": ["u"]}))
    with pytest.raises(InsightsError):
        compute_insights(make_frame([], [], "view", []))


def test_cli_insights(tmp_path, capsys) -> None:
    from shell.cli import main

    assert main(["insights", "--source", "synthetic", "--events", "5000", "--out",
                 str(tmp_path)]) == 0
    assert "6 charts" in capsys.readouterr().out
    assert (tmp_path / "index.html").exists() and (tmp_path / "funnel.png").exists()
    assert "synthetic" in (tmp_path / "insights.md").read_text()
