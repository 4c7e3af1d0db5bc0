"""One logging format for every role; called once by the CLI before a role starts."""

from __future__ import annotations

import logging


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
        force=True,
    )
    # Client libraries are chatty at INFO; their warnings still come through.
    for noisy in ("aiokafka", "kafka", "faust", "mode", "httpx", "urllib3", "implicit"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
