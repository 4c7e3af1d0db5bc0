"""`recsys serve`: run the API with uvicorn."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "serve",
        help="run the serving API (FastAPI + uvicorn)",
        description="Serve recommendations over HTTP (docs at /docs, metrics at /metrics). "
        "Settings come from the environment (RECSYS_API_*, REDIS_URL, KAFKA_BOOTSTRAP_SERVERS).",
    )
    parser.add_argument("--host", default=None, help="default: RECSYS_API_HOST (127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="default: RECSYS_API_PORT (8000)")
    parser.add_argument("--workers", type=int, default=1,
                        help="uvicorn worker processes (each holds its own copy of the factors; "
                        "/metrics aggregates them through prometheus-client's multiprocess "
                        f"mode, in a temporary directory unless {MULTIPROC_ENV} is set)")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    parser.set_defaults(handler=_serve)


@contextmanager
def multiprocess_metrics_dir() -> Iterator[str]:
    """`PROMETHEUS_MULTIPROC_DIR` for the worker processes, set before they are spawned.

    An operator's own setting is kept (and left alone: prometheus-client wants it emptied
    between runs, which is then the operator's job); otherwise a fresh temporary directory,
    removed on exit."""
    existing = os.environ.get(MULTIPROC_ENV) or os.environ.get(MULTIPROC_ENV.lower())
    if existing:
        yield existing
        return
    path = tempfile.mkdtemp(prefix="recsys-metrics-")
    os.environ[MULTIPROC_ENV] = path
    try:
        yield path
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(path, ignore_errors=True)


def _check_redis_mode(settings: object) -> None:
    """One node or cluster, as the settings say: checked before uvicorn starts, so that a
    mismatch is the CLI's configuration error rather than a failed lifespan (which the app
    checks too, for other ways of starting it)."""
    from redis.exceptions import RedisError

    from recsys.redis_client import check_redis_mode, redis_client

    try:
        client = redis_client(settings, socket_timeout=2, socket_connect_timeout=2)
    except RedisError:
        return  # unreachable: the API starts degraded and retries (and checks on connect)
    try:
        check_redis_mode(client, settings)
    finally:
        client.close()


def _serve(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from recsys.settings import get_settings

    settings = get_settings()
    host = args.host or settings.api_host
    port = settings.api_port if args.port is None else args.port
    from serving.main import check_write_access

    check_write_access(settings, host)  # ConfigError: the CLI's exit code for bad settings
    _check_redis_mode(settings)
    if args.workers > 1:
        # The worker processes build the app from the environment (app_from_env), which
        # checks settings.api_host: say which host they really bind.
        os.environ["RECSYS_API_HOST"] = host
    logging.getLogger(__name__).info("serving on http://%s:%d (docs at /docs)", host, port)
    common = {"host": host, "port": port, "log_config": None, "access_log": args.access_log,
              "timeout_graceful_shutdown": 5}
    if args.workers > 1:
        # Each worker has its own metric values: they go to files in one directory, which
        # every worker's /metrics reads (serving/telemetry.py).
        with multiprocess_metrics_dir():
            uvicorn.run("serving.main:app_from_env", factory=True, workers=args.workers,
                        **common)
    else:
        from serving.main import create_app

        uvicorn.run(create_app(settings), **common)
    return 0
