"""Any CSV of interactions, given a mapping from frame fields to the file's columns.

    load_csv("orders.csv", {"user_id": "customer", "item_id": "sku",
                            "event_type": "action", "timestamp": "ts"})

On the command line the mapping is `user_id=customer,item_id=sku,event_type=action,timestamp=ts`
(`parse_mapping`). `user_id`, `item_id` and `timestamp` must be mapped; the event type comes
either from a mapped column or from one constant for the whole file (`event_type="view"`).
`value` (rating or quantity) and `event_id` are optional; without an event id column, ids are
`<file stem>-<row>` so reloading the same file yields the same ids.

Event type names are matched case-insensitively, with common synonyms (purchase, buy, order ->
transaction; cart, add_to_cart -> addtocart; pageview -> view) and any extra `aliases`.
Timestamps are epoch seconds, milliseconds, microseconds or ISO-8601 text (`timestamp_unit`
s, ms, us, iso, or auto: text -> ISO-8601, numbers below 1e11 -> seconds, else milliseconds),
or text in a strftime `timestamp_format` (`%d-%m-%Y`: day-first dates, common in shop
exports), read as UTC. A value that does not parse is an error naming its row and value.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.sources import FRAME_COLUMNS, SourceError, make_frame
from recsys.sources.options import TIMESTAMP_UNITS

REQUIRED = ("user_id", "item_id", "timestamp")
# Spellings seen in shop exports, mapped to our event types.
EVENT_ALIASES: dict[str, str] = {
    "purchase": "transaction", "buy": "transaction", "order": "transaction",
    "checkout": "transaction", "sale": "transaction",
    "cart": "addtocart", "add_to_cart": "addtocart", "add-to-cart": "addtocart",
    "addtobasket": "addtocart", "basket": "addtocart",
    "pageview": "view", "page_view": "view", "detail": "view", "impression": "view",
    "rate": "rating",
}
# Below this an epoch number is seconds (1e11 s is the year 5138; 1e11 ms is 1973).
_SECONDS_LIMIT = 1e11


def parse_mapping(text: str) -> dict[str, str]:
    """`field=column,field=column` -> {field: column}; fields must be frame fields."""
    mapping: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        field, sep, column = part.partition("=")
        field, column = field.strip(), column.strip()
        if not sep or not field or not column:
            raise SourceError(f"bad mapping entry {part!r}: expected field=column")
        if field not in FRAME_COLUMNS:
            raise SourceError(f"unknown field {field!r} in mapping; fields: {FRAME_COLUMNS}")
        if field in mapping:
            raise SourceError(f"field {field!r} mapped twice")
        mapping[field] = column
    return mapping


def to_epoch_ms(values: pd.Series, unit: str = "auto",
                time_format: str | None = None) -> np.ndarray:
    """A timestamp column -> int64 epoch milliseconds; SourceError on unparseable values.

    With `time_format` (strftime, e.g. `%d-%m-%Y`) every value must match it exactly; the
    unit must then be left at auto.
    """
    if unit not in TIMESTAMP_UNITS:
        raise SourceError(f"timestamp unit {unit!r}: expected one of {TIMESTAMP_UNITS}")
    if time_format is not None:
        if unit != "auto":
            raise SourceError(f"give a timestamp format or a timestamp unit ({unit!r}), not both")
        return _parse_formatted(values, time_format)
    numeric = pd.to_numeric(values, errors="coerce")
    if unit == "auto":
        if numeric.notna().all():
            unit = "s" if numeric.abs().max() < _SECONDS_LIMIT else "ms"
        else:
            unit = "iso"
    if unit == "iso":
        parsed = pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")
        bad = parsed.isna()
        if bad.any():
            _fail_rows("timestamp is not ISO-8601 text", bad, values)
        delta = parsed - pd.Timestamp(0, tz="UTC")
        return (delta // pd.Timedelta(milliseconds=1)).to_numpy(np.int64)
    bad = numeric.isna()
    if bad.any():
        _fail_rows(f"timestamp is not a number (unit {unit})", bad, values)
    scale = {"s": 1000.0, "ms": 1.0, "us": 0.001}[unit]
    return np.round(numeric.to_numpy(np.float64) * scale).astype(np.int64)


def _parse_formatted(values: pd.Series, time_format: str) -> np.ndarray:
    if "%" not in time_format:
        raise SourceError(f"timestamp format {time_format!r} has no % directive; "
                          "e.g. '%d-%m-%Y' for day-first dates")
    text = values.astype(str).str.strip()
    try:
        parsed = pd.to_datetime(text, format=time_format, errors="coerce", utc=True)
    except ValueError as exc:  # a malformed format string, not a bad value
        raise SourceError(f"timestamp format {time_format!r}: {exc}") from None
    bad = parsed.isna()
    if bad.any():
        _fail_rows(f"timestamp does not match the format {time_format!r}", bad, values)
    delta = parsed - pd.Timestamp(0, tz="UTC")
    return (delta // pd.Timedelta(milliseconds=1)).to_numpy(np.int64)


def _fail_rows(message: str, bad: pd.Series, values: pd.Series) -> None:
    first = int(np.flatnonzero(bad.to_numpy())[0])
    # data row 1 is the first row under the header, which is line 2 of the file
    raise SourceError(f"{message}: {int(bad.sum())} rows, first at data row {first + 1} "
                      f"(line {first + 2}): {values.iloc[first]!r}")


def normalise_event_types(values: pd.Series,
                          aliases: Mapping[str, str] | None = None) -> pd.Series:
    table = {**EVENT_ALIASES, **{k.lower(): v.lower() for k, v in (aliases or {}).items()}}
    lowered = values.astype(str).str.strip().str.lower()
    return lowered.map(lambda v: table.get(v, v))


def load_csv(
    path: str | Path,
    mapping: Mapping[str, str],
    *,
    event_type: str | None = None,
    timestamp_unit: str = "auto",
    timestamp_format: str | None = None,
    sep: str = ",",
    aliases: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    path = Path(path)
    missing = [f for f in REQUIRED if f not in mapping]
    if missing:
        raise SourceError(f"column mapping lacks {missing}; e.g. "
                          "user_id=customer,item_id=sku,timestamp=ts")
    if ("event_type" in mapping) == (event_type is not None):
        raise SourceError("give the event type either as a mapped column (event_type=COLUMN) "
                          "or as one constant for the file (--event-type), not both/neither")
    try:
        raw = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise SourceError(f"CSV file not found: {path}") from None
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise SourceError(f"{path}: cannot parse as CSV ({exc})") from None
    absent = sorted(set(mapping.values()) - set(raw.columns))
    if absent:
        raise SourceError(f"{path}: no column(s) {absent}; the file has {list(raw.columns)}")
    for field in ("user_id", "item_id"):
        empty = raw[mapping[field]].str.strip() == ""
        if empty.any():
            _fail_rows(f"{path}: empty {field} (column {mapping[field]!r})", empty,
                       raw[mapping[field]])
    types = (normalise_event_types(raw[mapping["event_type"]], aliases)
             if "event_type" in mapping
             else normalise_event_types(pd.Series([event_type] * len(raw)), aliases))
    value = None
    if "value" in mapping:
        column = raw[mapping["value"]].replace("", np.nan)
        value = pd.to_numeric(column, errors="coerce")
        bad = value.isna() & column.notna()
        if bad.any():
            _fail_rows(f"{path}: value is not a number", bad, column)
    return make_frame(
        user_id=raw[mapping["user_id"]].str.strip(),
        item_id=raw[mapping["item_id"]].str.strip(),
        event_type=types.to_numpy(),
        timestamp=to_epoch_ms(raw[mapping["timestamp"]], timestamp_unit, timestamp_format),
        value=value,
        event_id=raw[mapping["event_id"]] if "event_id" in mapping else None,
        id_prefix=f"{path.name.split('.')[0]}-",
    )
