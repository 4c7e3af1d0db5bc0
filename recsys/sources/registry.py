"""One entry point from a *source spec* to an event frame, shared by the CLI, the trainer and
the evaluation:

    synthetic                 the built-in generator (events, seed and options from arguments)
    movielens:PATH            MovieLens u.data (ML-100K) or ratings.dat (ML-1M/10M), .gz ok
    retailrocket:PATH         Retailrocket events.csv
    csv:PATH                  any CSV, with a column mapping (see recsys.sources.generic_csv)
    PATH                      a file named u.data, ratings.dat or events.csv (kind guessed)

    frame = load_source("movielens:../shared/data/movielens-100k/u.data.gz")
    frame = load_source("synthetic", events=50_000, seed=7)
    frame = load_source("csv:orders.csv", csv_map="user_id=customer,item_id=sku,timestamp=ts",
                        event_type="transaction")
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from recsys.sources import SourceError

KINDS = ("synthetic", "movielens", "retailrocket", "csv")
DEFAULT_SYNTHETIC_EVENTS = 100_000
SOURCE_HELP = (
    "synthetic | movielens:PATH (u.data or ratings.dat) | retailrocket:PATH (events.csv) | "
    "csv:PATH (with --map) | a PATH named u.data, ratings.dat or events.csv"
)


def parse_spec(spec: str) -> tuple[str, Path | None]:
    """`kind:path` -> (kind, path); a bare path is recognised by its file name."""
    spec = spec.strip()
    if spec == "synthetic":
        return "synthetic", None
    kind, sep, rest = spec.partition(":")
    if sep and kind in KINDS:
        if kind == "synthetic":
            raise SourceError("'synthetic' takes no path; use --events/--seed for its size")
        if not rest:
            raise SourceError(f"source {spec!r}: give a path after '{kind}:'")
        return kind, Path(rest).expanduser()
    path = Path(spec).expanduser()
    name = path.name.lower().removesuffix(".gz")
    if name == "u.data" or name.endswith("ratings.dat"):
        return "movielens", path
    if name == "events.csv":
        return "retailrocket", path
    raise SourceError(f"unknown source {spec!r}; expected {SOURCE_HELP}")


def load_source(
    spec: str,
    *,
    events: int | None = None,
    seed: int = 42,
    csv_map: str | Mapping[str, str] | None = None,
    event_type: str | None = None,
    timestamp_unit: str = "auto",
    timestamp_format: str | None = None,
    sep: str = ",",
    aliases: Mapping[str, str] | None = None,
    synthetic_options: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """The event frame of a source, sorted by time.

    `events` is the synthetic generator's size (default 100,000); for a file it keeps the
    first `events` events in time order. csv_map, event_type, timestamp_unit, timestamp_format,
    sep and aliases apply to `csv:` sources only (recsys.sources.options puts them on the
    command line); synthetic_options (n_users, n_items, days, start_ms, ...) to
    the generator only.
    """
    kind, path = parse_spec(spec)
    if events is not None and events < 1:
        raise SourceError("events must be >= 1")
    if kind != "csv" and (csv_map or event_type or timestamp_format or timestamp_unit != "auto"
                          or sep != ","):
        raise SourceError(f"a column mapping (--map, --event-type, --timestamp-unit, "
                          f"--timestamp-format, --sep) applies to csv: sources, not {kind}")
    if kind == "synthetic":
        from recsys.sources import synthetic

        return synthetic.generate(events or DEFAULT_SYNTHETIC_EVENTS, seed=seed,
                                  **dict(synthetic_options or {}))
    assert path is not None
    if not path.is_file():
        raise SourceError(f"{kind} source: file not found: {path}")
    if kind == "movielens":
        from recsys.sources.movielens import load_movielens

        frame = load_movielens(path)
    elif kind == "retailrocket":
        from recsys.sources.retailrocket import load_retailrocket

        frame = load_retailrocket(path)
    else:
        from recsys.sources.generic_csv import load_csv, parse_mapping

        if not csv_map:
            raise SourceError("a csv: source needs a column mapping, e.g. "
                              "--map user_id=customer,item_id=sku,event_type=action,timestamp=ts")
        mapping = parse_mapping(csv_map) if isinstance(csv_map, str) else dict(csv_map)
        frame = load_csv(path, mapping, event_type=event_type, timestamp_unit=timestamp_unit,
                         timestamp_format=timestamp_format, sep=sep, aliases=aliases)
    if events is not None:
        frame = frame.iloc[:events]  # the index (source rows) stays
    return frame
