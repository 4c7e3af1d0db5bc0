"""`recsys evaluate`, `recsys insights`, `recsys tune`: the data scientist's commands.

Nothing heavy is imported at module level (the handlers import pandas, implicit, matplotlib).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from evaluation import DEFAULT_MODELS, MODELS
from recsys.argtypes import positive_int

log = logging.getLogger(__name__)


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def _floats(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("expected comma-separated numbers") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    return values


def _models(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(m.strip().lower() for m in text.split(",") if m.strip()))
    unknown = [m for m in names if m not in MODELS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown model(s) {unknown or text!r}; known: "
                                         f"{', '.join(MODELS)}")
    return names


def _source_args(parser: argparse.ArgumentParser) -> None:
    from recsys.sources.options import add_source_options
    from recsys.sources.registry import SOURCE_HELP

    parser.add_argument("--source", required=True, metavar="SPEC", help=SOURCE_HELP)
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="directory for the report, JSON and PNG charts")
    parser.add_argument("--events", type=positive_int, default=None, metavar="N",
                        help="synthetic: events to generate (default 100000); files: the "
                        "first N events in time order")
    parser.add_argument("--seed", type=int, default=None,
                        help="synthetic generator seed (default: RECSYS_RANDOM_SEED)")
    add_source_options(parser)


def source_label(spec: str) -> str:
    """`movielens:/long/path/u.data.gz` -> `movielens:u.data.gz`: reports and chart titles
    name the dataset, not the machine's directories."""
    kind, sep, rest = spec.partition(":")
    return f"{kind}:{Path(rest).name}" if sep and rest else Path(spec).name or spec


def _load(args: argparse.Namespace):  # noqa: ANN202 - (frame, settings)
    from recsys.settings import get_settings
    from recsys.sources.options import source_options
    from recsys.sources.registry import load_source

    settings = get_settings()
    seed = settings.random_seed if args.seed is None else args.seed
    frame = load_source(args.source, events=args.events, seed=seed, **source_options(args))
    log.info("loaded %d events from %s", len(frame), args.source)
    return frame, settings


def load_item_attributes(spec: str) -> dict:  # {item id: ItemAttributes}
    """Item attributes by id from an items spec (recsys.sources.items: movielens:PATH,
    retailrocket:PATH, csv:PATH, or a bare u.item / movies.dat)."""
    from recsys.sources.items import load_items

    return {item.item_id: item for item in load_items(spec)}


def register(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser(
        "evaluate", help="offline evaluation: popularity, item-kNN, ALS (+ RMSE, replay)",
        description="Ranks items for held-out users with popularity, item-kNN and ALS and "
        "reports precision, recall, F1, MAP, NDCG, hit rate and coverage at k; RMSE of rating "
        "predictors when the source has explicit ratings; with --replay, the streaming replay "
        "(static vs fold-in vs periodic retrains). Writes metrics.json, report.md and PNG "
        "charts to --out and prints a table.")
    _source_args(ev)
    ev.add_argument("--k", type=positive_int, default=10,
                    help="cut-off of the metrics (default 10)")
    ev.add_argument("--protocol",
                    choices=["time", "stratified", "time-repeat", "cold-items", "both"],
                    default="time",
                    help="time: last events by time are the test set (how the system is "
                    "used; default); stratified: Microsoft Recommenders' per-user random "
                    "75/25 split (their python_stratified_split, row for row); time-repeat: "
                    "the time split keeping seen items, to measure 'buy again' (re-bought "
                    "items count, nothing is excluded); cold-items: a random 20%% of the "
                    "items never in training, only they are ranked (needs --items); both: "
                    "time and stratified")
    ev.add_argument("--items", default=None, metavar="SPEC",
                    help="item attributes, e.g. movielens:PATH/u.item.gz (or movies.dat): "
                    "adds the content rows (cold-items protocol; a `hybrid` row on time and "
                    "stratified)")
    ev.add_argument("--params", type=Path, default=None, metavar="JSON",
                    help="best_params.json from `recsys tune`: adds an 'ALS (tuned)' row")
    ev.add_argument("--reference", action="append", default=[], metavar="NAME",
                    help="add a row from an external library fitted on the same split in the "
                    "same run, and every row's NDCG as a ratio to it (repeatable): cornac-bpr "
                    "(needs the extra: pip install 'streaming-recsys[reference]')")
    ev.add_argument("--models", type=_models, default=DEFAULT_MODELS, metavar="M,M,...",
                    help=f"models to compare, of {','.join(MODELS)} (default "
                    f"{','.join(DEFAULT_MODELS)}); neural needs the `neural` extra (PyTorch) "
                    "and adds a `neural` variant to the replay")
    ev.add_argument("--replay", action="store_true", help="also run the streaming replay")
    ev.add_argument("--train-fraction", type=_fraction, default=0.5,
                    help="replay: share of the timeline the first model is trained on "
                    "(default 0.5)")
    ev.add_argument("--retrains", type=int, default=4, help="replay: periodic refits (default 4)")
    ev.add_argument("--buckets", type=positive_int, default=10,
                    help="replay: points of the chart over time (default 10)")
    ev.set_defaults(handler=_evaluate)

    ins = sub.add_parser(
        "insights", help="charts of a dataset: event types, top items, long tail, funnel",
        description="Events per type, most viewed and most bought items, the long tail of item "
        "popularity, events per day, activity per user and the view -> cart -> purchase "
        "funnel, as PNGs plus insights.md and index.html in --out.")
    _source_args(ins)
    ins.set_defaults(handler=_insights)

    tu = sub.add_parser(
        "tune", help="ALS hyper-parameter search on a validation split (never the test split)",
        description="Random (or grid) search over factors, regularization and alpha, each "
        "point evaluated at every iteration count, on a validation split carved from the "
        "training part of --protocol's split; then a local refinement around the best. The "
        "test split is scored once at the end, for the report. Writes tune_<protocol>.md, "
        "tune_<protocol>.json, best_params.json (input of `recsys evaluate --params`) and charts.")
    _source_args(tu)
    tu.add_argument("--protocol", choices=["time", "stratified"], default="time",
                    help="the split to tune for (default time)")
    tu.add_argument("--k", type=positive_int, default=10, help="metric cut-off (default 10)")
    tu.add_argument("--metric", default=None, help="selection metric (default ndcg@K)")
    tu.add_argument("--search", choices=["random", "grid"], default="random",
                    help="random points of the grid (default) or all of it")
    tu.add_argument("--trials", type=positive_int, default=24,
                    help="random search: (factors, regularization, alpha) points (default 24)")
    tu.add_argument("--folds", type=positive_int, default=3,
                    help="validation folds carved from the training part; scores are means "
                    "(default 3)")
    tu.add_argument("--candidates", default=None, metavar="NAME,...",
                    help="tune these candidates (recsys.candidates: popularity, als, "
                    "knn_cosine, knn_bm25, knn_tfidf, ease, or 'all') with the trainer's own "
                    "search (recsys.selection) within --budget seconds, instead of the ALS "
                    "grid study; writes candidates_<protocol>.json/.md with the leaderboard")
    tu.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                    help="--candidates: search budget (default RECSYS_TRAINER_TUNE_BUDGET_S)")
    tu.add_argument("--no-progress", action="store_true", help="no progress bar")
    tu.add_argument("--no-refine", action="store_true",
                    help="skip the local search around the best random point")
    for axis in ("factors", "regularization", "alpha", "iterations"):
        tu.add_argument(f"--{axis}", type=_floats, default=None, metavar="V,V,...",
                        help=f"values of {axis} to search (default: a built-in grid)")
    tu.set_defaults(handler=_tune)


def _evaluate(args: argparse.Namespace) -> int:
    from evaluation.evaluate import load_params_file, run_evaluation, summary_table

    frame, settings = _load(args)
    protocols = ("time", "stratified") if args.protocol == "both" else (args.protocol,)
    if "cold-items" in protocols and not args.items:
        raise SystemExit("recsys evaluate: --protocol cold-items needs --items SPEC")
    items = load_item_attributes(args.items) if args.items else None
    tuned = load_params_file(args.params) if args.params else None
    report = run_evaluation(
        frame, settings, args.out, k=args.k, protocols=protocols,
        source=source_label(args.source),
        tuned=tuned, replay=args.replay, references=tuple(dict.fromkeys(args.reference)),
        models=args.models, items=items,
        items_source=source_label(args.items) if args.items else None,
        replay_options={"train_fraction": args.train_fraction, "retrains": args.retrains,
                        "n_buckets": args.buckets})
    print(summary_table(report))
    print(f"\nwritten: {args.out / 'metrics.json'}, {args.out / 'report.md'}")
    return 0


def _insights(args: argparse.Namespace) -> int:
    from evaluation.insights import write_insights

    frame, _settings = _load(args)
    paths = write_insights(frame, args.out, source=source_label(args.source))
    charts = sorted(p.name for p in paths.values() if p.suffix == ".png")
    print(f"{len(charts)} charts: {', '.join(charts)}")
    print(f"page: {args.out / 'index.html'} (and insights.md)")
    return 0


def _tune(args: argparse.Namespace) -> int:
    from evaluation.tune import DEFAULT_SPACE, run_tune, run_tune_candidates

    frame, settings = _load(args)
    if args.candidates:
        names = None if args.candidates == "all" else tuple(
            n.strip() for n in args.candidates.split(",") if n.strip())
        report = run_tune_candidates(frame, settings, args.out, args.protocol,
                                     source=source_label(args.source), k=args.k,
                                     candidates=names, budget_s=args.budget)
        print(report["text"])
        return 0
    space = {axis: getattr(args, axis) or DEFAULT_SPACE[axis]
             for axis in ("factors", "regularization", "alpha", "iterations")}
    from tqdm import tqdm

    bar = tqdm(desc=f"tune {args.protocol}", unit="point", disable=args.no_progress)

    def progress(done: int, total: int, best_here) -> None:  # noqa: ANN001 - a Trial
        bar.total = max(total, done)
        bar.update(done - bar.n)
        bar.set_postfix(factors=best_here.factors, reg=best_here.regularization,
                        alpha=best_here.alpha, refresh=False)

    try:
        result = run_tune(frame, settings, args.out, args.protocol,
                          source=source_label(args.source),
                          k=args.k, search=args.search, n_trials=args.trials,
                          refine=not args.no_refine, folds=args.folds, space=space,
                          metric=args.metric, progress=progress)
    finally:
        bar.close()
    best = result.best
    print(f"best on the {args.protocol} validation split ({result.metric} "
          f"{best.metrics[result.metric]:.4f}): factors={best.factors} "
          f"regularization={best.regularization:g} alpha={best.alpha:g} "
          f"iterations={best.iterations}")
    for name, values in result.test.items():
        print(f"test split, {name}: " + ", ".join(
            f"{m} {values[m]:.4f}" for m in (f"ndcg@{args.k}", f"precision@{args.k}",
                                             f"recall@{args.k}", f"map@{args.k}")))
    print(f"written: {args.out / f'tune_{args.protocol}.md'}, {args.out / 'best_params.json'}")
    return 0
