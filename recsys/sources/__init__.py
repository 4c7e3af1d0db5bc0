"""Event sources: dataset loaders and the synthetic generator.

Every source produces an *event frame*: a pandas DataFrame with exactly these columns

    event_id    str      unique per event (dedupe key)
    user_id     str
    item_id     str
    event_type  str      one of recsys.events.EventType
    value       float64  rating 1-5 or quantity; NaN when absent
    timestamp   int64    epoch milliseconds

sorted by timestamp (stable). The frame's index is each event's row in its source (file
order): the stratified protocol draws its seeded shuffle in that order, as the reference
splitter does on the file. The trainer and evaluation work on frames directly (columnar, fast);
the producer turns rows into validated `Event`s with `iter_events`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd

from recsys.errors import RecsysError
from recsys.events import Event, EventType, InvalidEvent

FRAME_COLUMNS = ["event_id", "user_id", "item_id", "event_type", "value", "timestamp"]
_KNOWN_TYPES = {t.value for t in EventType}


class SourceError(RecsysError, ValueError):
    """A source cannot be read: missing file, wrong format, bad column mapping or values."""


def make_frame(
    user_id: object, item_id: object, event_type: object, timestamp: object,
    value: object = None, event_id: object = None, id_prefix: str = "e",
) -> pd.DataFrame:
    """Assemble a frame from columns, normalising types; event ids default to a stable
    `{id_prefix}{row}` so that re-loading the same file yields the same ids (dedupe works)."""
    users = pd.Series(user_id).astype(str).to_numpy()
    n = len(users)

    def column(values: object) -> pd.Series:
        # Scalars (one event type for a whole file, say) broadcast to every row.
        return pd.Series([values] * n if np.isscalar(values) else values)

    frame = pd.DataFrame({
        "user_id": users,
        "item_id": column(item_id).astype(str).to_numpy(),
        "event_type": column(event_type).astype(str).str.lower().to_numpy(),
        "timestamp": column(timestamp).astype("int64").to_numpy(),
    })
    frame["value"] = (np.full(n, np.nan) if value is None
                      else pd.to_numeric(column(value), errors="coerce").to_numpy(float))
    if event_id is None:
        frame["event_id"] = [f"{id_prefix}{i}" for i in range(n)]
    else:
        frame["event_id"] = pd.Series(event_id).astype(str).to_numpy()
    unknown = set(frame["event_type"].unique()) - _KNOWN_TYPES
    if unknown:
        raise SourceError(f"unknown event types in source: {sorted(unknown)[:5]}; "
                          f"known: {sorted(_KNOWN_TYPES)}")
    # The index keeps each row's place in the source (see the module docstring).
    return frame[FRAME_COLUMNS].sort_values("timestamp", kind="stable")


def iter_events(frame: pd.DataFrame,
                on_invalid: Callable[[int, InvalidEvent], None] | None = None) -> Iterator[Event]:
    """Validated events, one per row, in frame order. Without `on_invalid` the first invalid
    row raises InvalidEvent; with it, invalid rows are reported (row position, error) and
    skipped."""
    for position, row in enumerate(frame.itertuples(index=False)):
        try:
            yield Event.create(
                user_id=row.user_id, item_id=row.item_id, event_type=row.event_type,
                timestamp=int(row.timestamp), event_id=row.event_id,
                value=None if row.value != row.value else float(row.value),  # NaN -> None
            )
        except InvalidEvent as exc:
            if on_invalid is None:
                raise
            on_invalid(position, exc)
