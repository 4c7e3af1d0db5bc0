"""`recsys stream`: run one stream worker (start several to share the topic's partitions)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "stream",
        help="run a stream worker: real-time fold-in of user vectors",
        description="Consume the interactions topic, keep each user's recent history in a "
        "Faust table, fold new events into the user's vector against the current model and "
        "write it to Redis. Settings come from the environment (RECSYS_STREAM_*); the options "
        "below override them.",
    )
    parser.add_argument("--web-port", type=int, default=None,
                        help="metrics port (RECSYS_STREAM_WEB_PORT; 0 = a free port)")
    parser.add_argument("--worker-id", default=None, help="name in logs and dead letters")
    parser.add_argument("--batch-max-events", type=int, default=None)
    parser.add_argument("--batch-max-ms", type=int, default=None)
    parser.add_argument("--fetch-max-wait-ms", type=int, default=None)
    parser.set_defaults(handler=_run)

    attribution = sub.add_parser(
        "attribution",
        help="run the attribution consumer: clicks and purchases per served list",
        description="Consume the impressions and interactions topics, attribute clicks, "
        "add-to-carts and purchases to the recommendation lists that earned them "
        "(recsys.attribution), and count them per experiment variant in Redis and per model "
        "version, variant, source and position in Prometheus (docs/feedback.md).",
    )
    attribution.add_argument("--web-port", type=int, default=None,
                             help="metrics port (RECSYS_ATTRIBUTION_WEB_PORT; 0 = a free one)")
    attribution.set_defaults(handler=_run_attribution)


def _run(args: argparse.Namespace) -> int:
    from recsys.settings import load_settings
    from stream.worker import run

    overrides = {
        "stream_web_port": args.web_port,
        "stream_worker_id": args.worker_id,
        "stream_batch_max_events": args.batch_max_events,
        "stream_batch_max_ms": args.batch_max_ms,
        "stream_fetch_max_wait_ms": args.fetch_max_wait_ms,
    }
    return run(load_settings(**{k: v for k, v in overrides.items() if v is not None}))


def _run_attribution(args: argparse.Namespace) -> int:
    from recsys.settings import load_settings
    from stream.attribution import run

    overrides = {"attribution_web_port": args.web_port}
    return run(load_settings(**{k: v for k, v in overrides.items() if v is not None}))
