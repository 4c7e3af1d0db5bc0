"""`recsys train --every 15m`: keep the history current and retrain on a schedule.

Between runs the consumer keeps appending to the history. At each tick a run starts when at
least `min_new_events` events arrived since the last successful run (or when nothing is in
service yet and the history is not empty). A failing run is logged and counted by the trainer
and retried at the next tick; the serving model is untouched because the pointer only moves
as the last step of a successful run.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass

from recsys.modelstore import read_current_version
from trainer.ingest import HistoryConsumer
from trainer.lease import LeaseLost
from trainer.pipeline import Trainer

log = logging.getLogger(__name__)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str) -> float:
    """'15m' -> 900.0; units ms, s, m, h, d; a bare number is seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (e.g. 30s, 15m, 1h)")
    seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    if seconds <= 0:
        raise ValueError("a duration must be > 0")
    return seconds


@dataclass
class ScheduleState:
    runs: int = 0
    failures: int = 0
    published: int = 0
    new_events: int = 0


def run_every(trainer: Trainer, interval_s: float, min_new_events: int,
              stop: threading.Event, consumer: HistoryConsumer | None = None,
              max_runs: int | None = None) -> ScheduleState:
    state = ScheduleState()
    store = trainer.store
    if consumer is not None:
        consumer.catch_up()
    trained_at = 0  # history size at the last successful run (nothing trained yet)
    next_run = time.monotonic()
    while not stop.is_set():
        if trainer.lease is not None and trainer.lease.lost.is_set():
            # another trainer took over: every activation would be fenced; let it work
            raise LeaseLost("the trainer lease was lost (expired and taken over); stopping")
        now = time.monotonic()
        if now >= next_run:
            next_run = now + interval_s
            if consumer is not None:
                consumer.flush()  # the run trains on everything read so far
            state.new_events = max(0, store.n_events - trained_at)
            nothing_served = read_current_version(trainer.redis, trainer.keys) is None
            due = state.new_events >= min_new_events or nothing_served
            if due and store.n_events:
                state.runs += 1
                try:
                    result = trainer.run_once()
                except Exception:  # noqa: BLE001 - logged and counted by run_once; retry later
                    state.failures += 1
                else:
                    trained_at = store.n_events
                    state.published += int(result.published)
            else:
                log.info("skipping this run: %d new events (need %d)", state.new_events,
                         min_new_events)
            if max_runs is not None and state.runs >= max_runs:
                break
        if len(store.files()) > trainer.settings.trainer_compact_parts:
            store.compact()
        wait = max(0.0, min(1.0, next_run - time.monotonic()))
        if consumer is not None:
            consumer.consume_for(wait)
        else:
            stop.wait(wait)
    return state
