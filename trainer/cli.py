"""`recsys train` and `recsys model`: the trainer's commands.

    recsys train --once [--from-file SOURCE [--map ... --timestamp-format ...]] [--no-consume]
    recsys train --every 15m [--min-new-events N]
    recsys model list
    recsys model show VERSION
    recsys model rollback
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from recsys.sources.options import add_source_options

    train = sub.add_parser(
        "train",
        help="choose a model on the trainer's history, evaluate, publish if the gate passes",
        description="Consumes the interactions topic into the trainer's history (its own "
        "consumer group), tunes every candidate (RECSYS_TRAINER_CANDIDATES: ALS, item kNN, "
        "EASE, popularity) within RECSYS_TRAINER_TUNE_BUDGET_S on validation data carved from "
        "the training part, picks the best (popularity when nothing beats it), evaluates it "
        "on a time-based holdout against popularity and the model in service, and publishes "
        "it atomically if it is not worse. One trainer at a time per deployment (a lease in "
        "Redis): a second one waits up to trainer_lease_wait_s, then exits. Exit code 0 for a "
        "published or a rejected candidate, 1 for a failed run, 3 when another trainer holds "
        "the lease.",
    )
    mode = train.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="one run, then exit (default)")
    mode.add_argument("--every", metavar="DURATION",
                      help="run on a schedule (30s, 15m, 1h) until stopped")
    train.add_argument("--from-file", metavar="SOURCE",
                       help="seed the history from a dataset first (synthetic, movielens:PATH, "
                       "retailrocket:PATH, csv:PATH with --map); re-seeding is idempotent "
                       "(event ids)")
    train.add_argument("--events", type=int, default=None,
                       help="synthetic: number of events; files: keep the first N")
    train.add_argument("--seed", type=int, default=42, help="synthetic generator seed")
    train.add_argument("--min-new-events", type=int, default=None, metavar="N",
                       help="--every: train only when N new events arrived "
                       "(default: settings.trainer_min_new_events)")
    train.add_argument("--no-consume", action="store_true",
                       help="do not read the interactions topic (train on the stored history)")
    add_source_options(train)
    train.set_defaults(handler=_train)

    model = sub.add_parser("model", help="list model versions, roll back to the previous one")
    actions = model.add_subparsers(dest="model_action", metavar="ACTION", required=True)
    actions.add_parser("list", help="versions on disk with their role and metrics"
                       ).set_defaults(handler=_model_list)
    show = actions.add_parser("show", help="one version's leaderboard: every candidate's "
                              "settings, validation and holdout metrics, and which won")
    show.add_argument("version")
    show.set_defaults(handler=_model_show)
    actions.add_parser("rollback", help="make the previous version current again"
                       ).set_defaults(handler=_model_rollback)


def _train(args: argparse.Namespace) -> int:
    import logging
    import signal
    import threading

    from recsys.keys import Keys
    from recsys.settings import get_settings
    from trainer.errors import TrainerError
    from trainer.ingest import HistoryConsumer
    from trainer.lease import TrainerLease
    from trainer.pipeline import Trainer, history_store, trainer_redis
    from trainer.schedule import parse_duration, run_every
    from trainer.telemetry import TrainerMetrics

    log = logging.getLogger("trainer")
    settings = get_settings()
    if settings.trainer_backend == "spark":
        from recsys.spark_als import spark_options, spark_session

        # pyspark, Java and the master are checked now, not at the first fit: a ConfigError
        # naming what to install or fix (recsys.spark_als.SparkUnavailable)
        spark_session(spark_options(settings))
    frame = None
    if args.from_file:  # read (and validate) the file before taking the lease
        from recsys.sources.options import source_options
        from recsys.sources.registry import load_source

        frame = load_source(args.from_file, events=args.events, seed=args.seed,
                            **source_options(args))
    redis = trainer_redis(settings)
    # Taken before anything touches the history or Redis, held (renewed) until exit.
    with TrainerLease(redis, Keys.for_settings(settings), settings.trainer_lease_ttl_s,
                      settings.trainer_lease_wait_s) as lease:
        metrics = TrainerMetrics()
        store = history_store(settings, metrics)
        if frame is not None:
            stored = store.append(frame)
            log.info("seeded the history from %s: %d events (%d new)", args.from_file,
                     len(frame), stored)
        trainer = Trainer(settings, redis=redis, metrics=metrics, store=store, lease=lease)
        consumer = None if args.no_consume else HistoryConsumer(settings, store, trainer.metrics)
        try:
            if args.every:
                try:
                    interval = parse_duration(args.every)
                except ValueError as exc:
                    raise TrainerError(str(exc)) from None
                stop = threading.Event()
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, lambda *_: stop.set())
                port = trainer.metrics.serve(settings.trainer_metrics_port)
                log.info("trainer metrics on :%d/metrics; training every %s", port, args.every)
                min_new = (settings.trainer_min_new_events if args.min_new_events is None
                           else args.min_new_events)
                state = run_every(trainer, interval, min_new, stop, consumer)
                print(f"trainer stopped: {state.runs} runs, {state.published} published, "
                      f"{state.failures} failed")
                return 0
            if consumer is not None:
                new = consumer.catch_up()
                log.info("history caught up with %s: %d new events",
                         settings.interactions_topic, new)
            if len(store.files()) > settings.trainer_compact_parts:
                store.compact()
            result = trainer.run_once()
        finally:
            if consumer is not None:
                consumer.close()
    gate = result.decision
    status = "published" if result.published else "rejected"
    print(f"{status} {result.version} ({result.manifest.get('candidate')}, "
          f"{result.manifest.get('model_kind')}): {gate.metric} "
          f"candidate={_fmt(gate.candidate)} "
          f"popularity={_fmt(gate.popularity)} serving={_fmt(gate.serving)} "
          f"beats_popularity={str(gate.beats_popularity).lower()} ({gate.reason}); "
          f"{result.seconds:.1f}s")
    return 0


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _model_list(args: argparse.Namespace) -> int:
    from recsys.keys import Keys
    from recsys.settings import get_settings
    from trainer.pipeline import trainer_redis
    from trainer.publish import list_versions

    settings = get_settings()
    client = trainer_redis(settings)
    rows = list_versions(client, Keys.for_settings(settings), settings.model_dir)
    if not rows:
        print(f"no model versions in {settings.model_dir}")
        return 0
    metric = settings.trainer_gate_metric
    print(f"{'version':<30} {'role':<9} {'kind':<10} {'candidate':<11} {metric:>9} "
          f"{'popularity':>10} {'users':>8} {'items':>7}  created_at")
    for row in rows:
        value = row["metrics"].get(metric)
        pop = row.get("popularity_value")
        print(f"{row['version']:<30} {row['role']:<9} {row['model_kind']:<10} "
              f"{row['candidate']:<11} {_fmt(value):>9} {_fmt(pop):>10} "
              f"{row['n_users'] or 0:>8} {row['n_items'] or 0:>7}  {row['created_at']}")
    return 0


def _model_show(args: argparse.Namespace) -> int:
    from recsys.settings import get_settings
    from trainer.publish import read_manifest

    settings = get_settings()
    manifest = read_manifest(settings.model_dir, args.version)
    selection = manifest.get("selection") or {}
    metric = selection.get("metric", settings.trainer_gate_metric)
    print(f"{args.version}: {manifest.get('status')}, {manifest.get('model_kind', 'als')} "
          f"({manifest.get('candidate', 'als')} {manifest.get('candidate_params', {})})")
    if not selection:
        print("no leaderboard (a version from before candidate selection)")
        return 0
    print(f"winner: {selection['winner']} - {selection['reason']}")
    tuning = manifest.get("tuning") or {}
    print(f"selection: {selection['seconds']:.1f}s of a {selection['budget_s']:g}s budget, "
          f"{'searched' if selection.get('searched') else 'start points only'} "
          f"({tuning.get('reason', '-')}); validation: {selection['validation']}, "
          f"{selection['validation_users']} users")
    print(f"{'candidate':<12} {'kind':<10} {'val ' + metric:>14} {'holdout ' + metric:>18} "
          f"{'trials':>6}  settings / skipped")
    for entry in selection["leaderboard"]:
        mark = "*" if entry["name"] == selection["winner"] else " "
        print(f"{mark}{entry['name']:<11} {entry['kind']:<10} "
              f"{_fmt(entry['validation'].get(metric)):>14} "
              f"{_fmt((entry.get('holdout') or {}).get(metric)):>18} {entry['trials']:>6}  "
              f"{entry['skipped'] or entry['params']}")
    return 0


def _model_rollback(args: argparse.Namespace) -> int:
    from recsys.keys import Keys
    from recsys.settings import get_settings
    from trainer.pipeline import trainer_redis
    from trainer.publish import rollback

    settings = get_settings()
    client = trainer_redis(settings)
    restored, replaced = rollback(client, Keys.for_settings(settings))
    print(f"rolled back: {replaced} -> {restored} (current)")
    return 0
