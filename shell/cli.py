"""`recsys`: one console command, one sub-command per role.

Each role package owns its sub-commands in a `cli.py` with a `register(subparsers)` function;
those modules import nothing heavy at module level, so `recsys --help` stays fast. Handlers
take the parsed arguments and return a process exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from recsys.errors import ConfigError, RecsysError
from recsys.logging_setup import configure_logging

log = logging.getLogger("recsys")

# Modules with a register(subparsers) function, in the order their commands appear in --help.
COMMAND_MODULES = [
    "shell.stack_cli",
    "trainer.cli",
    "shell.produce_cli",
    "stream.cli",
    "shell.demo_cli",
    "evaluation.cli",
    "bench.cli",
    "serving.cli",
    "shell.user_cli",
    "shell.items_cli",
    "shell.experiment_cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recsys",
        description="Real-time streaming recommender: producer, stream worker, trainer, API.",
    )
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING, ERROR")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from recsys.blas import set_blas_threads
    from recsys.settings import get_settings

    try:
        settings = get_settings()
    except ConfigError as exc:
        configure_logging((args.log_level or "INFO").upper())
        log.error("%s", exc)
        return 2
    configure_logging((args.log_level or settings.log_level).upper())
    # Before any command imports numpy: the limit then holds from BLAS's first load, here
    # and in every process the command starts.
    set_blas_threads(settings.blas_threads)
    try:
        return int(args.handler(args) or 0)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    except RecsysError as exc:
        log.error("%s", exc)
        # an error class may name its own exit code (trainer.lease.LeaseHeld: 3)
        return int(getattr(exc, "exit_code", 1))
    except KeyboardInterrupt:
        log.info("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
