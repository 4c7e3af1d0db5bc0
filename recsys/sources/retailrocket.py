"""Retailrocket `events.csv`: `timestamp,visitorid,event,itemid,transactionid`.

timestamp is epoch milliseconds; event is view, addtocart or transaction; transactionid is set
on transactions only (it is not carried into the frame: the frame has no context column).
Gzip-compressed files are read transparently. Event ids are built from the row's content
(`rr-<visitor>-<timestamp>-<item>-<event>`), so reloading a file, or a longer export of the same
log, gives the same ids and the consumers' dedupe works; an exact duplicate row is the same
event.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from recsys.sources import SourceError, make_frame

COLUMNS = ["timestamp", "visitorid", "event", "itemid"]


def load_retailrocket(path: str | Path, nrows: int | None = None) -> pd.DataFrame:
    path = Path(path)
    try:
        raw = pd.read_csv(path, usecols=lambda c: c in COLUMNS, nrows=nrows,
                          dtype={"visitorid": str, "itemid": str, "event": str})
    except FileNotFoundError:
        raise SourceError(f"Retailrocket file not found: {path}") from None
    except (ValueError, pd.errors.ParserError) as exc:
        raise SourceError(f"{path}: not a Retailrocket events.csv ({exc})") from None
    missing = [c for c in COLUMNS if c not in raw.columns]
    if missing:
        raise SourceError(f"{path}: missing columns {missing}; expected header "
                          "timestamp,visitorid,event,itemid,transactionid")
    bad = raw[COLUMNS].isna().any(axis=1)
    if bad.any():
        raise SourceError(f"{path}: {int(bad.sum())} rows with empty fields, first at data "
                          f"row {int(bad.idxmax()) + 1}")
    if not pd.api.types.is_integer_dtype(raw["timestamp"]):
        raise SourceError(f"{path}: timestamp must be integer epoch milliseconds")
    event_id = ("rr-" + raw["visitorid"] + "-" + raw["timestamp"].astype(str) + "-"
                + raw["itemid"] + "-" + raw["event"])
    try:
        return make_frame(user_id=raw["visitorid"], item_id=raw["itemid"],
                          event_type=raw["event"], timestamp=raw["timestamp"],
                          event_id=event_id)
    except ValueError as exc:
        raise SourceError(f"{path}: {exc}") from None
