"""Data insights of an event frame, in the spirit of the classic Retailrocket analyses.

    stats = compute_insights(frame)            # pure: numbers and small tables, no I/O
    page  = write_insights(frame, out_dir)     # PNG charts + insights.md + index.html

What it shows: events per type, the most viewed and most bought items, the long tail of item
popularity (how much of the traffic the top 20 % of items take, Gini coefficient), events per
day by type, activity per user, and the funnel view -> add-to-cart -> purchase counted two
ways (events, and distinct visitors who reached each stage). Sources with explicit ratings
(MovieLens) also get the rating distribution; a source without views gets a funnel chart
that says so rather than a missing file, so the page always has the same sections.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evaluation import charts
from recsys.events import EventType
from recsys.sources import FRAME_COLUMNS

log = logging.getLogger(__name__)

TYPE_ORDER = [t.value for t in EventType]
FUNNEL = (EventType.VIEW.value, EventType.ADDTOCART.value, EventType.TRANSACTION.value)
HEAD_SHARE = 0.2

# name of each chart file -> section title on the page; the order is the page's order.
CHARTS = {
    "events_per_type.png": "Events per type",
    "top_items.png": "Most viewed and most bought items",
    "long_tail.png": "Long tail of item popularity",
    "events_over_time.png": "Events over time",
    "user_activity.png": "Activity per user",
    "funnel.png": "Funnel: view -> add-to-cart -> purchase",
    "ratings.png": "Rating distribution",
}


class InsightsError(ValueError):
    """The frame cannot be analysed (missing columns, no events)."""


@dataclass
class Insights:
    summary: dict[str, Any]
    events_per_type: dict[str, int]
    top_items: dict[str, pd.Series]
    item_counts: np.ndarray          # events per item, most popular first
    daily: pd.DataFrame              # events per day (rows) by type (columns)
    user_counts: np.ndarray          # events per user
    funnel_events: list[tuple[str, int]]
    funnel_visitors: list[tuple[str, int]]
    ratings: dict[float, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "summary": self.summary,
            "events_per_type": self.events_per_type,
            "top_items": {k: {str(i): int(v) for i, v in s.items()}
                          for k, s in self.top_items.items()},
            "funnel_events": dict(self.funnel_events),
            "funnel_visitors": dict(self.funnel_visitors),
            "ratings": {str(k): v for k, v in self.ratings.items()},
        }


def _check(frame: pd.DataFrame) -> None:
    missing = [c for c in FRAME_COLUMNS if c not in frame.columns]
    if missing:
        raise InsightsError(f"not an event frame: missing columns {missing}")
    if frame.empty:
        raise InsightsError("the source has no events")


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of a non-negative distribution: 0 = every item equally popular,
    -> 1 = all events on one item.  G = sum_i (2i - n - 1) x_(i) / (n sum x), x ascending."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n = x.size
    if n == 0 or x.sum() == 0:
        return 0.0
    i = np.arange(1, n + 1)
    return float(((2 * i - n - 1) * x).sum() / (n * x.sum()))


def head_share(sorted_counts: np.ndarray, share: float = HEAD_SHARE) -> float:
    """Fraction of all events that fall on the top `share` of items (counts sorted desc)."""
    counts = np.asarray(sorted_counts, dtype=np.float64)
    if counts.size == 0 or counts.sum() == 0:
        return 0.0
    head = max(1, int(np.ceil(share * counts.size)))
    return float(counts[:head].sum() / counts.sum())


def funnel_counts(frame: pd.DataFrame) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(events per funnel stage, distinct visitors who reached each stage)."""
    by_type = frame.groupby("event_type")
    events = [(t, int(by_type.size().get(t, 0))) for t in FUNNEL]
    users = by_type["user_id"].nunique()
    visitors = [(t, int(users.get(t, 0))) for t in FUNNEL]
    return events, visitors


def compute_insights(frame: pd.DataFrame, top_n: int = 10) -> Insights:
    _check(frame)
    counts = frame["event_type"].value_counts()
    per_type = {t: int(counts[t]) for t in TYPE_ORDER if t in counts.index}

    top = {}
    for label, etype in (("most viewed", EventType.VIEW.value),
                         ("most bought", EventType.TRANSACTION.value)):
        top[label] = frame.loc[frame["event_type"] == etype, "item_id"].value_counts().head(top_n)
    if not any(len(s) for s in top.values()):
        # Ratings-only sources (MovieLens): the most interacted items are the useful view.
        top = {"most rated": frame["item_id"].value_counts().head(top_n)}

    item_counts = frame["item_id"].value_counts().to_numpy()
    user_counts = frame["user_id"].value_counts().to_numpy()

    days = pd.to_datetime(frame["timestamp"], unit="ms").dt.floor("D")
    daily = (pd.crosstab(days, frame["event_type"])
             .reindex(columns=[t for t in TYPE_ORDER if t in per_type]))
    daily.index.name = "day"

    funnel_events, funnel_visitors = funnel_counts(frame)

    ratings: dict[float, int] = {}
    rated = frame.loc[frame["event_type"] == EventType.RATING.value, "value"].dropna()
    if len(rated):
        ratings = {float(k): int(v) for k, v in rated.value_counts().sort_index().items()}

    n_users, n_items = int(frame["user_id"].nunique()), int(frame["item_id"].nunique())
    pairs = int(frame[["user_id", "item_id"]].drop_duplicates().shape[0])
    first, last = int(frame["timestamp"].min()), int(frame["timestamp"].max())
    views = dict(funnel_events)
    visitors = dict(funnel_visitors)
    summary: dict[str, Any] = {
        "events": len(frame),
        "users": n_users,
        "items": n_items,
        "user_item_pairs": pairs,
        "density": pairs / (n_users * n_items),
        "first_event": pd.to_datetime(first, unit="ms").isoformat(),
        "last_event": pd.to_datetime(last, unit="ms").isoformat(),
        "days": (last - first) / 86_400_000,
        "events_per_user_median": float(np.median(user_counts)),
        "events_per_user_mean": float(user_counts.mean()),
        "users_with_one_event": float((user_counts == 1).mean()),
        "events_per_item_median": float(np.median(item_counts)),
        f"top_{int(HEAD_SHARE * 100)}pct_items_event_share": head_share(item_counts),
        "item_popularity_gini": gini(item_counts),
    }
    view, cart, buy = (views[t] for t in FUNNEL)
    if view:
        summary["cart_per_view"] = cart / view
        summary["transaction_per_cart"] = buy / cart if cart else 0.0
        summary["transaction_per_view"] = buy / view
        summary["visitors_who_carted"] = visitors[FUNNEL[1]] / visitors[FUNNEL[0]]
        summary["visitors_who_bought"] = visitors[FUNNEL[2]] / visitors[FUNNEL[0]]
    if ratings:
        summary["mean_rating"] = float(rated.mean())
    return Insights(summary, per_type, top, item_counts, daily, user_counts,
                    funnel_events, funnel_visitors, ratings)


def draw_charts(stats: Insights, out_dir: Path) -> dict[str, Path]:
    """Every chart in CHARTS (ratings only when the source has ratings)."""
    out_dir = Path(out_dir)
    paths = {
        "events_per_type.png": charts.bar_counts(
            stats.events_per_type, out_dir / "events_per_type.png", "Events per type",
            log_scale=len(stats.events_per_type) > 1),
        "top_items.png": charts.top_items(stats.top_items, out_dir / "top_items.png",
                                          "Top items"),
        "long_tail.png": charts.long_tail(
            stats.item_counts, out_dir / "long_tail.png",
            f"Item popularity: {stats.summary['items']:,} items, "
            f"Gini {stats.summary['item_popularity_gini']:.2f}", HEAD_SHARE),
        "events_over_time.png": charts.stacked_over_time(
            stats.daily, out_dir / "events_over_time.png", "Events per day by type",
            ylabel="events per day", log_scale=len(stats.daily.columns) > 1),
        "user_activity.png": charts.histogram_log(
            stats.user_counts, out_dir / "user_activity.png", "Events per user",
            xlabel="events of the user (log)", ylabel="users (log)"),
        "funnel.png": charts.funnel({"events": stats.funnel_events,
                                     "distinct visitors": stats.funnel_visitors},
                                    out_dir / "funnel.png", "Funnel view -> cart -> purchase"),
    }
    if stats.ratings:
        paths["ratings.png"] = charts.bar_counts(
            {f"{k:g}": v for k, v in stats.ratings.items()}, out_dir / "ratings.png",
            "Ratings", ylabel="ratings")
    return paths


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if 0 < abs(value) < 1:
            return f"{value:.4f}"
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def render_markdown(stats: Insights, chart_paths: dict[str, Path], source: str) -> str:
    lines = [f"# Data insights: `{source}`", "", "| statistic | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in stats.summary.items()]
    lines += ["", "| event type | events | share |", "|---|---:|---:|"]
    total = sum(stats.events_per_type.values())
    lines += [f"| {t} | {n:,} | {n / total:.2%} |" for t, n in stats.events_per_type.items()]
    if stats.funnel_events[0][1]:
        lines += ["", "| funnel stage | events | distinct visitors |", "|---|---:|---:|"]
        lines += [f"| {t} | {e:,} | {v:,} |" for (t, e), (_, v)
                  in zip(stats.funnel_events, stats.funnel_visitors, strict=True)]
    for name, title in CHARTS.items():
        if name in chart_paths:
            lines += ["", f"## {title}", "", f"![{title}]({chart_paths[name].name})"]
    return "\n".join(lines) + "\n"


def render_html(stats: Insights, chart_paths: dict[str, Path], source: str) -> str:
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(_fmt(v))}</td></tr>"
                   for k, v in stats.summary.items())
    sections = "".join(
        f"<h2>{html.escape(title)}</h2><img src='{html.escape(chart_paths[name].name)}' "
        f"alt='{html.escape(title)}'>"
        for name, title in CHARTS.items() if name in chart_paths)
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>Data insights: {html.escape(source)}</title>"
        "<style>body{font-family:sans-serif;max-width:900px;margin:2em auto}"
        "table{border-collapse:collapse}td{border:1px solid #ccc;padding:2px 8px}"
        "img{max-width:100%}</style></head><body>"
        f"<h1>Data insights: <code>{html.escape(source)}</code></h1>"
        f"<table>{rows}</table>{sections}</body></html>\n"
    )


def write_insights(frame: pd.DataFrame, out_dir: Path, source: str = "frame") -> dict[str, Path]:
    """Charts, insights.md, index.html and insights.json in `out_dir`; returns every path."""
    import json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stats = compute_insights(frame)
    paths = draw_charts(stats, out_dir)
    (out_dir / "insights.md").write_text(render_markdown(stats, paths, source), encoding="utf-8")
    (out_dir / "index.html").write_text(render_html(stats, paths, source), encoding="utf-8")
    (out_dir / "insights.json").write_text(json.dumps(stats.to_json(), indent=2, default=str),
                                           encoding="utf-8")
    log.info("insights of %s: %d charts in %s", source, len(paths), out_dir)
    return {**paths, "insights.md": out_dir / "insights.md", "index.html": out_dir / "index.html",
            "insights.json": out_dir / "insights.json"}
