"""Event time from an untrusted clock: what a reference time may be.

An event's `timestamp` is data the producer wrote, with the producer's clock (a phone set to
the wrong zone, a client sending local time as UTC). It is kept as data, but nothing that
acts as a clock may take it at its word: trending's forward-decay landmark, the trainer's
decay reference and holdout cut, the "up to" of a data snapshot. So every consumer clamps an
event's time to its *arrival* time when it lies beyond a tolerance in the future:

    t_used = t_event              if t_event <= arrival + tolerance
           = arrival              otherwise (counted: reason "future")

Arrival is the Kafka record's timestamp (set when the record was produced; the broker's own
clock with `LogAppendTime`), itself capped at the consumer's clock, so a replay of the same
record clamps to the same value. The HTTP ingest uses its own clock.

Past events are not clamped: a backfill of last year's purchases is real data, and an old
time can never move a reference time forward (references are maxima, and forward decay
gives old events a vanishing weight). Times before 1990 are rejected at validation as a unit
mistake (seconds for milliseconds), as are times past 2100 (microseconds for milliseconds).
No I/O here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

FUTURE = "future"


def now_ms() -> int:
    return int(time.time() * 1000)


def arrival_ms(record_timestamp_ms: int | None, clock_ms: int | None = None) -> int:
    """When a record arrived: its Kafka timestamp, never later than this process's clock
    (a record's CreateTime is set by the producing client's clock); the clock when the
    record has no timestamp."""
    clock = now_ms() if clock_ms is None else clock_ms
    if record_timestamp_ms is None or record_timestamp_ms <= 0:
        return clock
    return min(int(record_timestamp_ms), clock)


@dataclass(frozen=True, slots=True)
class EventClock:
    """Clamps event times to arrival beyond `tolerance_ms` in the future."""

    tolerance_ms: int

    @classmethod
    def from_seconds(cls, tolerance_s: float) -> EventClock:
        return cls(int(tolerance_s * 1000))

    def clamp(self, event_ms: int, arrival: int) -> tuple[int, str | None]:
        """(time to use, reason it was clamped or None)."""
        if event_ms > arrival + self.tolerance_ms:
            return arrival, FUTURE
        return event_ms, None

    def reference(self, latest_event_ms: int, clock_ms: int | None = None) -> int:
        """A reference time ("now" of a decay, "up to" of a snapshot) from the newest event
        time: never beyond this process's clock plus the tolerance."""
        clock = now_ms() if clock_ms is None else clock_ms
        return min(int(latest_event_ms), clock + self.tolerance_ms)
