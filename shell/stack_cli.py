"""`recsys stack`: run the embedded local broker and Redis for other commands to use."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import threading


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "stack",
        help="run the embedded local broker (Tansu) and redis-server",
        description="Start the embedded local stack on free ports. `up` keeps it running and "
        "prints the variables that point other commands at it; `run -- CMD` runs one command "
        "against it and stops it afterwards.",
    )
    actions = parser.add_subparsers(dest="stack_action", metavar="ACTION", required=True)
    up = actions.add_parser("up", help="start and keep running until Ctrl-C")
    up.add_argument("--broker-port", type=int, default=None, help="default: a free port")
    up.add_argument("--redis-port", type=int, default=None,
                    help="default: a free port (with --redis-cluster: the first node's)")
    up.add_argument("--redis-cluster", action="store_true",
                    help="a local 3-master Redis Cluster (redis-server in cluster mode) "
                    "instead of one redis-server; the exports set RECSYS_REDIS_CLUSTER=true")
    up.set_defaults(handler=_up)
    run = actions.add_parser("run", help="start, run one command against it, stop")
    run.add_argument("--redis-cluster", action="store_true",
                     help="a local 3-master Redis Cluster instead of one redis-server")
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="the command, after --")
    run.set_defaults(handler=_run)


def _up(args: argparse.Namespace) -> int:
    from shell.localstack import LocalStack

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with LocalStack(broker_port=args.broker_port, redis_port=args.redis_port,
                    redis_cluster=args.redis_cluster) as stack:
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in stack.env().items())
        # The one place a role prints rather than logs: this line is meant to be eval'd.
        print(f"export {exports}", flush=True)
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
    return 0


def _run(args: argparse.Namespace) -> int:
    from shell.localstack import LocalStack

    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        raise SystemExit("recsys stack run: give a command after --")
    with LocalStack(redis_cluster=args.redis_cluster) as stack:
        return subprocess.call(cmd, env={**os.environ, **stack.env()})
