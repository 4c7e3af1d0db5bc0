"""A small producer client for interaction events (confluent-kafka underneath).

    with EventProducer(settings) as producer:
        producer.send(Event.create("u1", "i9", "view"))

Events are validated before they leave (the same `recsys.events` rules the consumers apply),
keyed by user id, and sent asynchronously; `flush()` waits for delivery reports. Counters say
how many were delivered and how many failed, with the last error kept for the caller.

`send` waits for room when the local queue is full (a batch job: back-pressure is what it
wants). `offer` never waits (an event loop: the HTTP ingest): it refuses with `ProducerBusy`
when the queue cannot take the events or the broker has acknowledged nothing for longer than
a bound while events wait, and the caller answers 503 with Retry-After.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from recsys.errors import RecsysError
from recsys.events import Event
from recsys.settings import Settings

log = logging.getLogger(__name__)


class ProducerError(RecsysError):
    """The broker could not be reached or rejected events."""


class ProducerBusy(ProducerError):
    """The events were not queued: the local queue is full, or the broker has acknowledged
    nothing for too long. Nothing of the refused events was sent; retry later."""

    QUEUE_FULL = "queue_full"
    BROKER_STALLED = "broker_stalled"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class DeliveryStats:
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    last_error: str | None = None


class EventProducer:
    def __init__(self, settings: Settings, topic: str | None = None,
                 **client_overrides: Any) -> None:
        self.topic = topic or settings.interactions_topic
        self.stats = DeliveryStats()
        config = settings.kafka_config(**{
            # Small batches with a short linger: throughput without adding visible latency.
            "linger.ms": 5,
            "compression.type": "lz4",
            "enable.idempotence": False,
            "queue.buffering.max.messages": 500_000,
            **client_overrides,
        })
        self._producer = Producer(config)
        self.queue_max = int(config["queue.buffering.max.messages"])
        # When the broker last acknowledged a record, or when the queue last became non-empty
        # (an idle producer is not a stalled one).
        self._last_ack = time.monotonic()

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is None:
            self.stats.delivered += 1
            self._last_ack = time.monotonic()
        else:
            self.stats.failed += 1
            self.stats.last_error = str(err)

    @property
    def pending(self) -> int:
        """Records queued locally or in flight, not yet acknowledged (nor failed)."""
        return len(self._producer)

    def stalled_for(self) -> float:
        """Seconds the broker has acknowledged nothing while records wait (0 when none do)."""
        if not len(self._producer):
            return 0.0
        return time.monotonic() - self._last_ack

    def offer(self, events: Sequence[Event], max_stall_s: float) -> None:
        """Queue all `events` without ever waiting, or none of them: raise ProducerBusy when
        the local queue has no room for the whole batch or the broker has acknowledged
        nothing for `max_stall_s` while records wait."""
        pending = len(self._producer)
        if pending and time.monotonic() - self._last_ack > max_stall_s:
            raise ProducerBusy(ProducerBusy.BROKER_STALLED,
                               f"the broker acknowledged nothing for "
                               f"{time.monotonic() - self._last_ack:.0f}s; "
                               f"{pending} events wait")
        if pending + len(events) > self.queue_max:
            raise ProducerBusy(ProducerBusy.QUEUE_FULL,
                               f"the local queue holds {pending} of at most "
                               f"{self.queue_max} events")
        if not pending:
            self._last_ack = time.monotonic()
        for n, event in enumerate(events):
            try:
                self._producer.produce(self.topic, value=event.to_json(), key=event.key,
                                       on_delivery=self._on_delivery)
            except BufferError:
                # The byte bound (queue.buffering.max.kbytes) can be hit before the count:
                # the first n are queued and will be delivered; their ids are stable, so a
                # retry of the whole batch is deduplicated downstream.
                raise ProducerBusy(ProducerBusy.QUEUE_FULL,
                                   f"the local queue is full after {n} of {len(events)} "
                                   "events") from None
            except KafkaException as exc:
                raise ProducerError(f"cannot produce to {self.topic}: {exc}") from exc
            self.stats.sent += 1
        self._producer.poll(0)

    def offer_raw(self, key: bytes | None, value: bytes, topic: str,
                  on_delivery: Callable[[KafkaError | None, Message], None]) -> None:
        """Queue one pre-serialised record without ever waiting (impressions): ProducerBusy
        when the local queue is full. Its delivery report goes to `on_delivery` (served by
        the owner's poll), not to `stats`: these records are not the caller's events."""
        try:
            self._producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
        except BufferError:
            raise ProducerBusy(ProducerBusy.QUEUE_FULL, "the local queue is full") from None
        except KafkaException as exc:
            raise ProducerError(f"cannot produce to {topic}: {exc}") from exc

    def send(self, event: Event) -> None:
        self.send_raw(event.key, event.to_json())

    def send_raw(self, key: bytes | None, value: bytes, topic: str | None = None) -> None:
        """Send pre-serialised bytes (used for dead-letter records and tests of bad input)."""
        while True:
            try:
                self._producer.produce(topic or self.topic, value=value, key=key,
                                       on_delivery=self._on_delivery)
                break
            except BufferError:
                # Local queue full: serve delivery reports until there is room again.
                self._producer.poll(0.05)
            except KafkaException as exc:
                raise ProducerError(f"cannot produce to {topic or self.topic}: {exc}") from exc
        self.stats.sent += 1
        self._producer.poll(0)

    def poll(self, timeout: float = 0.0) -> int:
        """Serve pending delivery reports (updates `stats`); returns how many were served."""
        return int(self._producer.poll(timeout))

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for outstanding deliveries; returns how many are still undelivered."""
        remaining = int(self._producer.flush(timeout))
        if remaining:
            log.warning("%d events still undelivered after %.0fs", remaining, timeout)
        return remaining

    def close(self, timeout: float = 30.0) -> None:
        self.flush(timeout)

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
