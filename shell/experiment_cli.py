"""`recsys experiment`: create, list, stop and report A/B experiments (Redis, like the API's
/v1/admin/experiments)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("experiment", help="A/B experiments: create, list, stop, report")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser(
        "create", help="create (or replace) an experiment and make it active",
        description="Variants as NAME=KIND:SHARE or NAME=model_version:VERSION:SHARE, e.g. "
        "`recsys experiment create exp1 model=model:0.5 pop=popularity:0.5`. Shares sum to 1; "
        "at most one experiment is active.")
    create.add_argument("name")
    create.add_argument("variants", nargs="+", metavar="NAME=KIND[:VALUE]:SHARE")
    create.set_defaults(handler=_create)
    listing = actions.add_parser("list", help="experiments and their variants")
    listing.set_defaults(handler=_list)
    stop = actions.add_parser("stop", help="deactivate an experiment (its counts stay)")
    stop.add_argument("name")
    stop.set_defaults(handler=_stop)
    report = actions.add_parser(
        "report", help="per-variant impressions, clicks, CTR, conversion, significance",
        description="CTR and conversion per variant with 95 %% Wilson intervals and a "
        "two-proportion z-test of each variant against the first (the control); says when "
        "there is not enough data yet.")
    report.add_argument("name")
    report.add_argument("--json", action="store_true", help="print JSON instead of a table")
    report.add_argument("--chart", type=Path, default=None,
                        help="also write a bar chart of CTR with its intervals (PNG)")
    report.add_argument("--min-impressions", type=int, default=None,
                        help="impressions per variant before a conclusion (default 100)")
    report.set_defaults(handler=_report)


def _client() -> Any:
    from recsys.redis_client import redis_client
    from recsys.settings import get_settings

    return redis_client(get_settings(), socket_timeout=10.0)


def _keys() -> Any:
    from recsys.keys import Keys
    from recsys.settings import get_settings

    return Keys.for_settings(get_settings())


def parse_variant(text: str) -> dict[str, Any]:
    """NAME=KIND[:VALUE]:SHARE -> the variant's JSON fields."""
    name, sep, rest = text.partition("=")
    parts = rest.split(":")
    if not sep or len(parts) not in (2, 3):
        raise ValueError(f"variant {text!r}: expected NAME=KIND[:VALUE]:SHARE")
    try:
        share = float(parts[-1])
    except ValueError:
        raise ValueError(f"variant {text!r}: the share {parts[-1]!r} is not a number") from None
    variant: dict[str, Any] = {"name": name, "kind": parts[0], "share": share}
    if len(parts) == 3:
        variant["value"] = parts[1]
    return variant


def _load(client: Any, name: str) -> Any:
    from recsys.errors import ConfigError
    from recsys.experiments import Experiment

    raw = client.hget(_keys().experiments, name)
    if raw is None:
        raise ConfigError(f"no experiment named {name!r}")
    return Experiment.model_validate_json(raw)


def _create(args: argparse.Namespace) -> int:
    import orjson
    from pydantic import ValidationError

    from recsys.errors import ConfigError
    from recsys.eventtime import now_ms
    from recsys.experiments import Experiment, ExperimentError, manifests_needed, resolve_versions
    from recsys.modelstore import current_and_previous

    try:
        experiment = Experiment.model_validate({
            "name": args.name, "created_at": now_ms(),
            "variants": [parse_variant(v) for v in args.variants]})
    except (ValueError, ValidationError) as exc:
        raise ConfigError(f"invalid experiment: {exc}") from None
    client, keys = _client(), _keys()
    current, previous = current_and_previous(client, keys)
    manifests = {}
    for version in manifests_needed(experiment, current, previous):
        raw = client.get(keys.model_manifest(version))
        if raw is not None:
            manifests[version] = orjson.loads(raw)
    try:
        experiment = resolve_versions(experiment, manifests, current, previous)
    except ExperimentError as exc:
        raise ConfigError(f"invalid experiment: {exc}") from None
    for raw_name, raw in client.hgetall(keys.experiments).items():
        other = Experiment.model_validate_json(raw)
        if other.active and other.name != experiment.name:
            raise ConfigError(f"experiment {raw_name.decode()!r} is active; stop it first")
    client.hset(keys.experiments, experiment.name, orjson.dumps(experiment.model_dump()))
    print(f"experiment {experiment.name} active: " + ", ".join(
        f"{v.name} ({v.kind}, {v.share:g})" for v in experiment.variants))
    return 0


def _list(_args: argparse.Namespace) -> int:
    from recsys.experiments import Experiment

    for raw in _client().hgetall(_keys().experiments).values():
        e = Experiment.model_validate_json(raw)
        print(f"{e.name:<20} {'active' if e.active else 'stopped':<8} " + ", ".join(
            f"{v.name}={v.kind}:{v.share:g}" for v in e.variants))
    return 0


def _stop(args: argparse.Namespace) -> int:
    import orjson

    client = _client()
    experiment = _load(client, args.name).model_copy(update={"active": False})
    client.hset(_keys().experiments, experiment.name, orjson.dumps(experiment.model_dump()))
    print(f"experiment {args.name} stopped")
    return 0


def experiment_report(client: Any, keys: Any, name: str,
                      min_impressions: int | None = None) -> dict[str, Any]:
    """The report of one experiment from Redis (recsys.experiments.report)."""
    from recsys.experiments import MIN_IMPRESSIONS, counts_from_hash, ordered_counts, report

    experiment = _load(client, name)
    counts = counts_from_hash(client.hgetall(keys.experiment_counts(name)))
    return report(name, ordered_counts(experiment, counts),
                  min_impressions if min_impressions is not None else MIN_IMPRESSIONS)


def print_report(rep: dict[str, Any], console: Any | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=f"experiment {rep['name']}")
    for column in ("variant", "impressions", "clicks", "CTR (95 % CI)", "purchases",
                   "conversion (95 % CI)"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for v in rep["variants"]:
        lo, hi = v["ctr_ci95"]
        clo, chi = v["conversion_ci95"]
        table.add_row(v["name"], f"{v['impressions']:,}", f"{v['clicks']:,}",
                      f"{v['ctr']:.2%} ({lo:.2%}-{hi:.2%})", f"{v['purchases']:,}",
                      f"{v['conversion']:.2%} ({clo:.2%}-{chi:.2%})")
    console.print(table)
    for c in rep.get("comparisons", []):
        console.print(f"{c['variant']} vs {c['against']}: z = {c['z']:.2f}, "
                      f"p = {c['p_value']:.3g}")
    if not rep["enough_data"]:
        console.print(f"[yellow]not enough data yet: every variant needs at least "
                      f"{rep['min_impressions']} impressions before a conclusion[/yellow]")


def write_chart(rep: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [v["name"] for v in rep["variants"]]
    ctr = [v["ctr"] for v in rep["variants"]]
    err = [[v["ctr"] - v["ctr_ci95"][0] for v in rep["variants"]],
           [v["ctr_ci95"][1] - v["ctr"] for v in rep["variants"]]]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.bar(names, ctr, yerr=err, capsize=6, color="#4c72b0")
    ax.set_ylabel("CTR (95 % Wilson interval)")
    p = rep.get("p_value")
    ax.set_title(f"{rep['name']}" + (f" (p = {p:.3g})" if p is not None else ""))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _report(args: argparse.Namespace) -> int:
    rep = experiment_report(_client(), _keys(), args.name, args.min_impressions)
    if args.json:
        print(json.dumps(rep, indent=2))
    else:
        print_report(rep)
    if args.chart is not None:
        write_chart(rep, args.chart)
    return 0
