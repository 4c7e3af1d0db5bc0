"""`recsys demo`: the whole system on embedded defaults (see shell/demo.py)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "demo",
        help="run the whole system locally with synthetic traffic and a live view",
        description="Starts the local broker and Redis, trains a first model on synthetic "
        "history, runs the stream worker, the API (docs at /docs) and a periodic trainer, "
        "replays traffic in real time and shows one visitor's recommendations changing. "
        "Runs until Ctrl-C, or for --duration seconds and then exits 0 if all went well.",
    )
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds to run the live phase, then stop (default: until Ctrl-C)")
    parser.add_argument("--rate", type=float, default=200.0, help="replayed events per second")
    parser.add_argument("--history-events", type=int, default=60_000,
                        help="synthetic history events used for the first model")
    parser.add_argument("--port", type=int, default=None, help="API port (default 8000)")
    parser.add_argument("--retrain-every", default="45s", help="periodic retrain interval")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--no-experiment", action="store_true",
                        help="no A/B experiment (model vs popularity) and no simulated visitors")
    parser.add_argument("--visitors", type=float, default=10.0,
                        help="simulated visitors per second in the experiment")
    parser.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from recsys.settings import get_settings
    from shell.demo import Demo, DemoOptions

    settings = get_settings()
    if args.duration is not None and args.duration <= 0:
        raise SystemExit("--duration must be positive")
    if args.rate <= 0:
        raise SystemExit("--rate must be positive")
    if args.visitors <= 0:
        raise SystemExit("--visitors must be positive")
    options = DemoOptions(duration=args.duration, rate=args.rate,
                          history_events=args.history_events, seed=args.seed,
                          api_port=args.port or settings.api_port,
                          retrain_every=args.retrain_every,
                          experiment=not args.no_experiment, visitors=args.visitors)
    return Demo(options, settings).run()
