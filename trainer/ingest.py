"""Consume `interactions` into the trainer's history (its own consumer group).

Each assigned partition starts at the offset stored with the history files (trainer.history),
not at Kafka's committed offset: rows and offsets are written in one atomic step, so a
restart neither loses nor repeats an event. Invalid messages are skipped and counted by
reason (the stream worker owns the dead-letter topic; the trainer only needs clean rows).
"""

from __future__ import annotations

import logging
import time
from collections import Counter as Tally
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from recsys.erasure import erased_user
from recsys.events import InvalidEvent, parse_event
from recsys.eventtime import EventClock, arrival_ms, now_ms
from recsys.kafka import ensure_topics
from recsys.settings import Settings
from recsys.sources import FRAME_COLUMNS
from trainer.errors import TrainerError
from trainer.history import HistoryStore, offset_key
from trainer.telemetry import TrainerMetrics

log = logging.getLogger(__name__)


@dataclass
class IngestStats:
    consumed: int = 0
    stored: int = 0
    invalid: Tally[str] = field(default_factory=Tally)
    duplicates: int = 0
    clamped: Tally[str] = field(default_factory=Tally)


class HistoryConsumer:
    """Keeps one consumer (and its group membership) open across calls."""

    def __init__(self, settings: Settings, store: HistoryStore,
                 metrics: TrainerMetrics | None = None, **client_overrides: Any) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.topic = settings.interactions_topic
        self.stats = IngestStats()
        self._rows: dict[str, list[Any]] = {c: [] for c in
                                            [*FRAME_COLUMNS, "source_partition", "source_offset"]}
        self._next: dict[int, int] = {}  # partition -> next offset to read (consumed so far)
        self._dirty: set[int] = set()
        self._assigned: list[int] | None = None
        self._last_flush = time.monotonic()
        self._clock = EventClock.from_seconds(settings.event_time_future_tolerance_s)
        ensure_topics(settings)
        self._consumer = Consumer(settings.kafka_config(**{
            "group.id": settings.trainer_group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            # The broker only notices a vanished member after this; it also bounds the join.
            "session.timeout.ms": 6000,
            "fetch.wait.max.ms": 100,
            **client_overrides,
        }))
        self._consumer.subscribe([self.topic], on_assign=self._on_assign,
                                 on_revoke=self._on_revoke)

    # --- group membership ----------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        stored = self.store.partition_offsets(self.topic)
        for tp in partitions:
            tp.offset = stored.get(tp.partition, OFFSET_BEGINNING)
            if tp.partition in stored:
                self._next[tp.partition] = stored[tp.partition]
        consumer.assign(partitions)
        self._assigned = sorted(tp.partition for tp in partitions)
        log.info("history consumer assigned %s partitions %s (resuming at %s)", self.topic,
                 self._assigned, {p: stored.get(p, "beginning") for p in self._assigned})

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.flush()
        self._assigned = None

    def wait_for_assignment(self, timeout: float = 30.0) -> list[int]:
        deadline = time.monotonic() + timeout
        while self._assigned is None:
            if time.monotonic() > deadline:
                raise TrainerError(f"no partitions of {self.topic} assigned within {timeout:.0f}s")
            self._poll(0.2)
        return list(self._assigned)

    # --- consuming ---------------------------------------------------------------------
    def _poll(self, timeout: float) -> int:
        messages = self._consumer.consume(num_messages=5000, timeout=timeout)
        clock_ms = now_ms()
        rows = self._rows
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error on %s: %s", self.topic, err)
                continue
            partition, offset = msg.partition(), msg.offset()
            self._next[partition] = offset + 1
            self._dirty.add(partition)
            self.stats.consumed += 1
            erased = erased_user(msg.value())
            if erased is not None:
                self._erase(erased)
                continue
            try:
                event = parse_event(msg.value() or b"",
                                    naive_utc=self.settings.event_time_naive_utc)
            except InvalidEvent as exc:
                self.stats.invalid[str(exc.reason)] += 1
                if self.metrics:
                    self.metrics.history_invalid.labels(reason=str(exc.reason)).inc()
                continue
            rows["event_id"].append(event.event_id)
            rows["user_id"].append(event.user_id)
            rows["item_id"].append(event.item_id)
            rows["event_type"].append(str(event.event_type))
            rows["value"].append(float("nan") if event.value is None else event.value)
            # Stored clamped to arrival: the history's times feed the decay reference and
            # the holdout cut, which must not follow a producer's clock into the future.
            stamp_type, stamp = msg.timestamp()
            ts, why = self._clock.clamp(event.timestamp,
                                        arrival_ms(stamp if stamp_type else None, clock_ms))
            if why is not None:
                self.stats.clamped[why] += 1
                if self.metrics:
                    self.metrics.history_clamped.labels(reason=why).inc()
            rows["timestamp"].append(ts)
            rows["source_partition"].append(partition)
            rows["source_offset"].append(offset)
        if len(rows["event_id"]) >= self.settings.trainer_flush_events or (
                self._dirty and time.monotonic() - self._last_flush
                >= self.settings.trainer_flush_seconds):
            self.flush()
        return len(messages)

    def _erase(self, user: str) -> None:
        """An erase control record: the user's rows consumed before it (buffered or in the
        files) go; later events of theirs are new data."""
        keep = [n for n, u in enumerate(self._rows["user_id"]) if u != user]
        if len(keep) != len(self._rows["user_id"]):
            for values in self._rows.values():  # in place: _poll holds a reference
                values[:] = [values[n] for n in keep]
        self.store.erase([user])

    def flush(self) -> int:
        """Write buffered events and the offsets they reach to the history (atomically)."""
        self._last_flush = time.monotonic()
        if not self._dirty:
            return 0
        frame = pd.DataFrame(self._rows)
        offsets = {offset_key(self.topic, p): self._next[p] for p in self._dirty}
        stored = self.store.append(frame, offsets)
        duplicates = len(frame) - stored
        self.stats.stored += stored
        self.stats.duplicates += duplicates
        if self.metrics:
            self.metrics.history_events.inc(stored)
            self.metrics.history_duplicates.inc(duplicates)
        commits = [TopicPartition(self.topic, p, self._next[p]) for p in self._dirty]
        self._rows = {c: [] for c in self._rows}
        self._dirty.clear()
        try:  # for lag monitoring only: the history files hold the real position
            self._consumer.commit(offsets=commits, asynchronous=True)
        except Exception as exc:  # noqa: BLE001 - a failed courtesy commit changes nothing
            log.debug("offset commit failed: %s", exc)
        return stored

    def catch_up(self, timeout: float = 300.0) -> int:
        """Consume until every assigned partition reaches the end it had when called; flush.
        Returns the number of new events stored."""
        before = self.stats.stored
        partitions = self.wait_for_assignment(min(timeout, 30.0))
        ends: dict[int, int] = {}
        for p in partitions:
            low, high = self._consumer.get_watermark_offsets(
                TopicPartition(self.topic, p), timeout=10.0)
            ends[p] = high
            self._next.setdefault(p, low)
        deadline = time.monotonic() + timeout
        while any(self._next.get(p, 0) < end for p, end in ends.items()):
            if time.monotonic() > deadline:
                self.flush()
                raise TrainerError(f"history did not catch up with {self.topic} within "
                                   f"{timeout:.0f}s: at {self._next}, end {ends}")
            self._poll(0.5)
        self.flush()
        return self.stats.stored - before

    def consume_for(self, seconds: float) -> int:
        """Keep consuming for a while (between scheduled runs); returns the messages read.
        Buffered events are written by the flush policy (trainer_flush_events /
        trainer_flush_seconds) or an explicit flush() before a training run, not per call:
        fewer, larger files."""
        before = self.stats.consumed
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._poll(min(0.5, max(0.01, deadline - time.monotonic())))
        return self.stats.consumed - before

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._consumer.close()

    def __enter__(self) -> HistoryConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
