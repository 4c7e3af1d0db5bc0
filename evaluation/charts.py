"""PNG charts for the evaluation report, the replay run and the data insights page.

Every function takes plain data (numbers, arrays, pandas objects), draws one figure with the
non-interactive Agg backend and writes it to `path`; nothing here computes a statistic.
Figures are small (about 800 x 450 px at 100 dpi) so that the ones kept under docs/results
stay light in git.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on servers and in CI

import matplotlib.pyplot as plt  # noqa: E402 - must follow the backend choice
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter, PercentFormatter  # noqa: E402

log = logging.getLogger(__name__)

FIGSIZE = (8.0, 4.5)
DPI = 100
# Stable colours per series name, so one model has one colour on every chart of a report.
PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3",
           "#8C8C8C", "#CCB974", "#64B5CD"]
EVENT_COLOURS = {"view": "#4C72B0", "click": "#64B5CD", "addtocart": "#DD8452",
                 "transaction": "#55A868", "rating": "#8172B3"}


def _thousands(x: float, _pos: object = None) -> str:
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.1f}".removesuffix(".0") + suffix
    return f"{x:g}"


def shrink_png(path: Path, colors: int = 128) -> None:
    """Rewrite a PNG with a palette of `colors` (charts use a handful of flat colours plus
    antialiasing): about 4x smaller, no visible change; keeps committed charts light."""
    from PIL import Image  # matplotlib's own dependency

    with Image.open(path) as image:
        quantized = image.convert("RGB").quantize(colors=colors,
                                                  method=Image.Quantize.MEDIANCUT)
    quantized.save(path, optimize=True)


def _save(fig: plt.Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    shrink_png(path)
    log.debug("chart written: %s", path)
    return path


def _colour(name: str, index: int) -> str:
    return EVENT_COLOURS.get(name, PALETTE[index % len(PALETTE)])


def _empty(ax: plt.Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=12, color="#555555",
            transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def bar_counts(counts: Mapping[str, float], path: Path, title: str, ylabel: str = "events",
               log_scale: bool = False) -> Path:
    """One bar per key, the value printed on top (event types, say)."""
    fig, ax = plt.subplots(figsize=FIGSIZE)
    names = list(counts)
    values = [float(counts[n]) for n in names]
    if not names:
        _empty(ax, "no data")
    else:
        bars = ax.bar(names, values, color=[_colour(n, i) for i, n in enumerate(names)])
        total = sum(values) or 1.0
        for bar, value in zip(bars, values, strict=True):
            ax.annotate(f"{value:,.0f}\n({value / total:.1%})",
                        (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=9)
        if log_scale:
            ax.set_yscale("log")
            ax.set_ylim(top=max(values) * 8)
        else:
            ax.set_ylim(top=max(values) * 1.2)
            ax.yaxis.set_major_formatter(FuncFormatter(_thousands))
        ax.set_ylabel(ylabel)
    ax.set_title(title)
    return _save(fig, path)


def top_items(series_by_panel: Mapping[str, pd.Series], path: Path, title: str) -> Path:
    """Horizontal bar panels, one per key (most viewed, most bought...), biggest on top."""
    panels = list(series_by_panel)
    n = max(1, len(panels))
    fig, axes = plt.subplots(1, n, figsize=(FIGSIZE[0] * (1 if n == 1 else 1.2), FIGSIZE[1]),
                             squeeze=False)
    for i, (ax, name) in enumerate(zip(axes[0], panels or ["-"], strict=True)):
        series = series_by_panel.get(name, pd.Series(dtype=float))
        if series is None or len(series) == 0:
            _empty(ax, f"no {name} events")
            ax.set_title(name)
            continue
        labels = [str(x) for x in series.index][::-1]
        ax.barh(labels, series.to_numpy()[::-1], color=_colour(name, i))
        ax.set_title(name)
        ax.xaxis.set_major_formatter(FuncFormatter(_thousands))
        ax.tick_params(axis="y", labelsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def long_tail(sorted_counts: np.ndarray, path: Path, title: str, head_share: float = 0.2) -> Path:
    """Item popularity by rank (log-log) and the cumulative share of events held by the top
    items; the dashed line marks the head (top `head_share` of items)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(FIGSIZE[0] * 1.2, FIGSIZE[1]))
    counts = np.asarray(sorted_counts, dtype=np.float64)
    if counts.size == 0:
        _empty(left, "no data")
        _empty(right, "no data")
        fig.suptitle(title)
        return _save(fig, path)
    ranks = np.arange(1, counts.size + 1)
    left.loglog(ranks, np.maximum(counts, 0.5), color=PALETTE[0])
    left.set_xlabel("item rank")
    left.set_ylabel("events on the item")
    left.set_title("popularity by rank (log-log)")
    share = np.cumsum(counts) / counts.sum()
    item_frac = ranks / counts.size
    right.plot(item_frac, share, color=PALETTE[1])
    head = max(1, int(np.ceil(head_share * counts.size)))
    right.axvline(head / counts.size, ls="--", color="#555555")
    right.annotate(f"top {head_share:.0%} of items:\n{share[head - 1]:.1%} of events",
                   (head / counts.size, share[head - 1]), xytext=(10, -40),
                   textcoords="offset points", fontsize=9,
                   arrowprops={"arrowstyle": "->", "color": "#555555"})
    right.xaxis.set_major_formatter(PercentFormatter(1.0))
    right.yaxis.set_major_formatter(PercentFormatter(1.0))
    right.set_xlabel("share of items (most popular first)")
    right.set_ylabel("share of events")
    right.set_title("cumulative share")
    right.grid(alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path)


def stacked_over_time(frame: pd.DataFrame, path: Path, title: str, ylabel: str = "events",
                      log_scale: bool = False) -> Path:
    """Lines over a DatetimeIndex, one per column (events per day by type, say)."""
    fig, ax = plt.subplots(figsize=FIGSIZE)
    if frame.empty:
        _empty(ax, "no data")
    else:
        for i, column in enumerate(frame.columns):
            ax.plot(frame.index, frame[column], label=str(column), color=_colour(str(column), i),
                    lw=1.3)
        if log_scale:
            ax.set_yscale("log")
        else:
            ax.yaxis.set_major_formatter(FuncFormatter(_thousands))
        ax.set_ylabel(ylabel)
        ax.legend(loc="upper left", fontsize=9)
        ax.grid(alpha=0.3)
        fig.autofmt_xdate()
    ax.set_title(title)
    return _save(fig, path)


def histogram_log(values: np.ndarray, path: Path, title: str, xlabel: str,
                  ylabel: str = "users") -> Path:
    """Distribution of a heavy-tailed count (events per user) on log-spaced bins."""
    fig, ax = plt.subplots(figsize=FIGSIZE)
    values = np.asarray(values, dtype=np.float64)
    values = values[values > 0]
    if values.size == 0:
        _empty(ax, "no data")
    else:
        top = max(2.0, float(values.max()))
        bins = np.unique(np.round(np.logspace(0, np.log10(top + 1), 30)))
        ax.hist(values, bins=bins, color=PALETTE[0], edgecolor="white")
        ax.set_xscale("log")
        ax.set_yscale("log")
        median = float(np.median(values))
        ax.axvline(median, ls="--", color=PALETTE[3])
        ax.annotate(f"median {median:g}", (median, ax.get_ylim()[1]), xytext=(5, -15),
                    textcoords="offset points", fontsize=9, color=PALETTE[3])
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    ax.set_title(title)
    return _save(fig, path)


def funnel(panels: Mapping[str, Sequence[tuple[str, float]]], path: Path, title: str) -> Path:
    """Funnel bars per panel (events, visitors...) with the conversion from the previous stage
    and from the top. Widths are square roots: a purchase is ~100x rarer than a view and
    linear bars would hide the bottom of the funnel."""
    n = max(1, len(panels))
    fig, axes = plt.subplots(1, n, figsize=(FIGSIZE[0] * (1 if n == 1 else 1.3), FIGSIZE[1]),
                             squeeze=False)
    for ax, (unit, stages) in zip(axes[0], panels.items(), strict=False):
        ax.set_yticks([])
        ax.set_xticks([])
        for side in ("top", "right", "left", "bottom"):
            ax.spines[side].set_visible(False)
        if not stages or stages[0][1] <= 0:
            _empty(ax, "no funnel: the source has no view events")
            ax.set_title(unit)
            continue
        names = [s[0] for s in stages]
        values = np.asarray([float(s[1]) for s in stages])
        y = np.arange(len(stages))[::-1]
        widths = np.sqrt(values)
        ax.barh(y, widths, left=(widths.max() - widths) / 2,
                color=[_colour(n, i) for i, n in enumerate(names)])
        for i, (yy, value) in enumerate(zip(y, values, strict=True)):
            text = f"{names[i]}: {value:,.0f}"
            if i > 0:
                prev = values[i - 1]
                text += f"\n{value / prev:.1%} of previous" if prev else "\n-"
                text += f", {value / values[0]:.2%} of top"
            ax.text(widths.max() / 2, yy, text, ha="center", va="center", fontsize=9,
                    bbox={"facecolor": "white", "alpha": 0.8, "lw": 0})
        ax.set_title(unit)
    fig.suptitle(title + " (bar width: square root of the count)")
    return _save(fig, path)


def grouped_bars(table: Mapping[str, Mapping[str, float]], metrics: Sequence[str], path: Path,
                 title: str, ylabel: str = "score") -> Path:
    """One group per metric, one bar per model (`table[model][metric]`)."""
    fig, ax = plt.subplots(figsize=FIGSIZE)
    models = list(table)
    if not models or not metrics:
        _empty(ax, "no data")
        ax.set_title(title)
        return _save(fig, path)
    width = 0.8 / len(models)
    x = np.arange(len(metrics))
    for i, model in enumerate(models):
        values = [float(table[model].get(m, np.nan)) for m in metrics]
        bars = ax.bar(x + (i - (len(models) - 1) / 2) * width, values, width, label=model,
                      color=PALETTE[i % len(PALETTE)])
        for bar, value in zip(bars, values, strict=True):
            if np.isfinite(value):
                ax.annotate(f"{value:.3f}", (bar.get_x() + bar.get_width() / 2, value),
                            ha="center", va="bottom", fontsize=7, rotation=90)
    ax.set_xticks(x, list(metrics))
    top = np.nanmax([[float(table[m].get(k, np.nan)) for k in metrics] for m in models])
    ax.set_ylim(0, (top if np.isfinite(top) and top > 0 else 1.0) * 1.25)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=9, ncol=min(4, len(models)), loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title)
    return _save(fig, path)


def lines_over_time(x: Sequence[object], series: Mapping[str, Sequence[float]], path: Path,
                    title: str, ylabel: str, xlabel: str = "time",
                    markers: Sequence[object] = (), marker_label: str = "") -> Path:
    """One line per series over shared x values; optional vertical markers (retrain times)."""
    fig, ax = plt.subplots(figsize=FIGSIZE)
    if not len(x) or not series:
        _empty(ax, "no data")
    else:
        for i, (name, values) in enumerate(series.items()):
            ax.plot(x, values, marker="o", ms=3, lw=1.6, label=name, color=PALETTE[i % 10])
        for j, pos in enumerate(markers):
            ax.axvline(pos, color="#999999", ls=":", lw=1,
                       label=marker_label if j == 0 and marker_label else None)
        ax.set_ylabel(ylabel)
        ax.set_xlabel(xlabel)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9, loc="best")
        if isinstance(x[0], pd.Timestamp | np.datetime64):
            fig.autofmt_xdate()
    ax.set_title(title)
    return _save(fig, path)


def sweep(values: Sequence[float], scores: Sequence[float], path: Path, title: str,
          xlabel: str, ylabel: str, log_x: bool = False) -> Path:
    """Score of a search as one hyper-parameter varies (best of the others at each value)."""
    fig, ax = plt.subplots(figsize=FIGSIZE)
    if not len(values):
        _empty(ax, "no data")
    else:
        order = np.argsort(np.asarray(values, dtype=np.float64))
        xs = np.asarray(values, dtype=np.float64)[order]
        ys = np.asarray(scores, dtype=np.float64)[order]
        ax.plot(xs, ys, marker="o", color=PALETTE[0])
        if log_x:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    ax.set_title(title)
    return _save(fig, path)
