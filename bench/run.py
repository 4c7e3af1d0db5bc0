"""`recsys bench` / `make bench`: run every benchmark, print one Markdown table, write
reports/bench.json.

Each benchmark module exposes `run(quick: bool) -> dict` returning flat measurements; the
pairs below say which figure is compared with which same-run baseline.
"""

from __future__ import annotations

import importlib
import json
import logging
import platform
import time
import traceback
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

BENCHMARKS = {
    "trainer": "bench.trainer_bench",
    "stream": "bench.stream_bench",
    "serving": "bench.serving_bench",
    "cluster": "bench.cluster_bench",
}

# The stream benchmark runs an ALS version, then a neural one (their throughput ratio).
# And item fold-in off, then on, with a version that lacks some items (their ratio).
RUN_OPTIONS: dict[str, dict[str, Any]] = {"stream": {"model_kind": "both",
                                                     "item_foldin": "both"}}

# (part, figure, baseline, how the ratio reads)
COMPARISONS = [
    ("trainer", "fit_s", "implicit_fit_s",
     "train --once with model selection (every candidate's point re-scored each run) / plain "
     "implicit fit; the target < 1.3 was set before selection: see pinned_fit_s"),
    ("trainer", "pinned_fit_s", "implicit_fit_s",
     "train --once, model pinned (ALS at the settings' point, no selection) / plain implicit "
     "fit; target < 1.3"),
    ("trainer", "spark.ndcg_ratio", None,
     "Spark MLlib ALS / implicit, NDCG@10 on ML-100K, each at its point searched on "
     "validation; target >= 0.95"),
    ("trainer", "spark.fit_ratio", None, "Spark MLlib (local[2]) / implicit, ALS fit seconds"),
    ("trainer", "neural_fit_s", None, "neural tower on ML-100K, whole history; target < 300 s"),
    ("stream", "events_per_s", "ceiling_events_per_s",
     "worker / bare consume loop; target >= 5000 ev/s"),
    ("stream", "freshness_p50_ms", None, "at 1,000 events/s"),
    ("stream", "freshness_p99_ms", None, "at 1,000 events/s; target < 250 ms"),
    ("stream", "redis_bytes_per_user", "raw_vector_bytes", "MEMORY USAGE / k*4"),
    ("stream", "neural.events_per_s", "events_per_s",
     "neural version (user tower) / ALS fold-in; target >= 0.5"),
    ("stream", "neural.freshness_p99_ms", None, "neural version at 1,000 events/s; < 250 ms"),
    ("stream", "item_foldin.on.events_per_s", "item_foldin.off.events_per_s",
     "item fold-in on / off, a version lacking 20 % of the items; target >= 0.8"),
    ("stream", "scaling.workers_2.events_per_cpu_s", "scaling.workers_1.events_per_cpu_s",
     "per-worker events per CPU-second, 2 workers / 1, one topic; target >= 0.9"),
    ("stream", "scaling.workers_4.events_per_cpu_s", "scaling.workers_1.events_per_cpu_s",
     "per-worker events per CPU-second, 4 workers / 1 (2-core machine)"),
    ("serving", "p50_ms", "redis_get_p50_ms", "API latency / raw Redis GET"),
    ("serving", "p99_ms", "redis_get_p99_ms", "at 300 req/s; target < 10 ms"),
    ("serving", "rps", None, "max throughput, personalised"),
    ("serving", "rules.rules_p99_ms", "rules.plain_p99_ms",
     "with rules (3 boosts, max_per, diversity 0.3) / plain, 300 req/s, one process; "
     "target < 10 ms"),
    ("serving", "rules.rules_api_cpu_ms_per_request", "rules.plain_api_cpu_ms_per_request",
     "API CPU per request, with rules / plain"),
    ("serving", "rules.rules_p99_ms_2_workers", "rules.plain_p99_ms_2_workers",
     "with rules / plain, 300 req/s, two API processes"),
    ("serving", "large_catalog.p99_ms", "p99_ms",
     "1,000,000 items (approximate search) / 50,000 exact; target < 10 ms at 300 req/s"),
    ("serving", "large_catalog.api_cpu_ms_per_request", "api_cpu_ms_per_request",
     "API CPU per request, 1,000,000 items / 50,000"),
    ("serving", "large_catalog.recall_at_k", None, "recall@64 against exact; target >= 0.95"),
    # the in-process figure moves least with the machine's load (bench.cluster_bench)
    ("cluster", "cluster_3_masters.inprocess_cpu_ms_asgi_user",
     "one_node.inprocess_cpu_ms_asgi_user",
     "API CPU per personalised request, no HTTP: 3-master Redis Cluster / one node"),
    ("cluster", "cluster_3_masters.api_cpu_ms_per_request", "one_node.api_cpu_ms_per_request",
     "API process CPU per request at 300 req/s: 3-master Redis Cluster / one node"),
]


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), inner, out)
    else:
        out[prefix] = value


def _lookup(results: dict[str, Any], part: str, name: str | None) -> Any:
    if name is None:
        return None
    flat: dict[str, Any] = {}
    _flatten("", results.get(part, {}), flat)
    if name in flat:
        return flat[name]
    # Benchmarks may nest per dataset ({"ml100k": {...}}); take the first match.
    for key, value in flat.items():
        if key.endswith("." + name):
            return value
    return None


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def markdown_table(results: dict[str, Any]) -> str:
    lines = ["| part | figure | measured | baseline (same run) | ratio | note |",
             "|---|---|---|---|---|---|"]
    for part, figure, baseline, note in COMPARISONS:
        value = _lookup(results, part, figure)
        base = _lookup(results, part, baseline)
        ratio = (value / base if isinstance(value, (int, float)) and isinstance(base, (int, float))
                 and base else None)
        base_cell = f"{baseline} = {_fmt(base)}" if baseline else "-"
        lines.append(
            f"| {part} | {figure} | {_fmt(value)} | {base_cell} | {_fmt(ratio)} | {note} |")
    return "\n".join(lines)


def run_all(parts: list[str], quick: bool, out: Path) -> dict[str, Any]:
    results: dict[str, Any] = {
        "meta": {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "machine": platform.platform(), "quick": quick},
    }
    for part in parts:
        log.info("benchmark %s ...", part)
        started = time.perf_counter()
        try:
            results[part] = importlib.import_module(BENCHMARKS[part]).run(
                quick=quick, **RUN_OPTIONS.get(part, {}))
        except Exception as exc:  # noqa: BLE001 - one failing benchmark must not hide the others
            log.error("benchmark %s failed: %s\n%s", part, exc, traceback.format_exc())
            results[part] = {"error": f"{type(exc).__name__}: {exc}"}
        log.info("benchmark %s took %.0fs", part, time.perf_counter() - started)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=float))
    return results
