"""The one set of command-line options that say how to read a source file, shared by every
command that reads one (`recsys train --from-file`, `produce`, `evaluate`, `tune`,
`insights`), so a mapping that works for one works for all:

    --map user_id=customer,item_id=sku,timestamp=date --event-type transaction \\
        --timestamp-format '%d-%m-%Y' --sep ';'

    add_source_options(parser)                  # at registration
    frame = load_source(spec, ..., **source_options(args))

Imports no pandas: the `recsys` command registers every sub-command at start-up.
"""

from __future__ import annotations

import argparse
from typing import Any

TIMESTAMP_UNITS = ("auto", "s", "ms", "us", "iso")


def add_source_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "csv: sources", "how to read a csv:PATH source (other kinds refuse these options)")
    group.add_argument("--map", dest="csv_map", default=None, metavar="FIELD=COLUMN,...",
                       help="column mapping; fields user_id, item_id, timestamp (required), "
                       "event_type, value, event_id")
    group.add_argument("--event-type", default=None,
                       help="one event type for every row, when no column holds it "
                       "(view, click, addtocart, transaction, rating)")
    group.add_argument("--timestamp-unit", default="auto", choices=TIMESTAMP_UNITS,
                       help="unit of the timestamp column (default: auto: text is ISO-8601, "
                       "numbers below 1e11 are seconds, others milliseconds)")
    group.add_argument("--timestamp-format", default=None, metavar="STRFTIME",
                       help="the timestamp column is text in this strftime format, e.g. "
                       "'%%d-%%m-%%Y' for day-first dates or '%%d/%%m/%%Y %%H:%%M'; read "
                       "as UTC; a row that does not match is an error naming it")
    group.add_argument("--sep", default=",",
                       help="field separator (default ','; $'\\t' for tabs)")


def source_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of recsys.sources.registry.load_source from the parsed options."""
    return {"csv_map": args.csv_map, "event_type": args.event_type,
            "timestamp_unit": args.timestamp_unit, "timestamp_format": args.timestamp_format,
            "sep": args.sep}
