"""The history table's changelog records, produced by librdkafka, one delivery future per batch.

Faust sends every table write through its own path (Topic.send_soon -> its producer buffer ->
one aiokafka `send` per record, each with its futures and callbacks on the event loop). For a
worker whose every event changes one table value, that path was the largest single cost of an
event after Faust's own delivery (about a sixth of the worker's CPU, py-spy). Here a
micro-batch's records go to a confluent-kafka producer instead: librdkafka batches, compresses
and sends them on its own threads, outside the GIL, and one asyncio future per batch resolves
when the broker has acknowledged every record of it.

The records are the ones Faust would write (the table's own key serialiser, raw values, the
partition of the user's events), so Faust's table recovery reads them as its own. Durability
is ordered the same way as before: the agent releases a batch's offsets for commit only after
this future (and the Redis write); Faust used to guarantee it by flushing its producer before
every commit.

Ordering: one request in flight per connection, so librdkafka's retries cannot reorder two
values of one user (the later one must win when the changelog is replayed). A record that still
fails after librdkafka's own retries is sent again with the user's *current* table value (never
an older one), with backoff, until it is delivered: the batch's future waits for that.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from stream import telemetry

log = logging.getLogger(__name__)

# (partition, key bytes, value bytes; None = a tombstone: the key is deleted)
ChangelogRecord = tuple[int, bytes, bytes | None]

PRODUCER_DEFAULTS = {
    "acks": "all",
    # A batch's future is awaited before its offsets are released, not before the next batch
    # is processed: a short linger still collects one micro-batch into one request per
    # partition without delaying anything a user sees.
    "linger.ms": 2,
    "compression.type": "lz4",
}
# Not overridable by RECSYS_KAFKA_CLIENT_OPTIONS: the changelog's correctness depends on it.
PRODUCER_REQUIRED = {"max.in.flight.requests.per.connection": 1}
POLL_S = 0.1
RESEND_BACKOFF_S = (0.1, 5.0)
QUEUE_FULL_WAIT_S = 0.005


class _BatchDelivery:
    """Counts one batch's delivery reports (on the poll thread) and resolves its future (on
    the event loop) when the last one arrived."""

    __slots__ = ("writer", "loop", "future", "remaining", "failed", "attempt")

    def __init__(self, writer: ChangelogWriter, loop: asyncio.AbstractEventLoop,
                 remaining: int) -> None:
        self.writer = writer
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.remaining = remaining
        self.failed: list[tuple[int, bytes]] = []  # (partition, key) to send again
        self.attempt = 0

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.failed.append((msg.partition(), msg.key()))
            log.warning("changelog record for key %r not delivered: %s", msg.key(), err)
        self.remaining -= 1
        if self.remaining == 0:
            self.loop.call_soon_threadsafe(self.writer._settle, self)


class ChangelogWriter:
    """Produces changelog records; `send` returns a future per batch (see module docstring).

    `current_value(key)` reads the table's value for a serialised key (for a re-send after a
    failure: the newest value, whatever the failed record held).
    """

    def __init__(self, config: dict[str, Any], topic: str,
                 current_value: Callable[[bytes], bytes | None],
                 producer: Any = None) -> None:
        self.topic = topic
        self.current_value = current_value
        # `producer`: a stand-in with confluent-kafka's produce/poll/flush (unit tests).
        self._producer = producer or Producer({**PRODUCER_DEFAULTS, **config,
                                               **PRODUCER_REQUIRED})
        self._closed = threading.Event()
        self._poller = threading.Thread(target=self._poll_forever, name="changelog-poll",
                                        daemon=True)
        self._poller.start()

    def _poll_forever(self) -> None:
        # Delivery reports are served on the thread that calls poll(): this one.
        while not self._closed.is_set():
            self._producer.poll(POLL_S)

    async def send(self, records: Sequence[ChangelogRecord]) -> asyncio.Future[None]:
        """Hand `records` to librdkafka; the returned future resolves once every one of them
        is acknowledged by the broker."""
        delivery = _BatchDelivery(self, asyncio.get_running_loop(), len(records))
        if not records:
            delivery.future.set_result(None)
            return delivery.future
        produce = self._producer.produce
        for partition, key, value in records:
            try:
                produce(self.topic, value, key, partition=partition, on_delivery=delivery)
            except BufferError:
                await self._produce(partition, key, value, delivery)
        return delivery.future

    async def _produce(self, partition: int, key: bytes, value: bytes | None,
                       delivery: _BatchDelivery) -> None:
        while True:
            try:
                self._producer.produce(self.topic, value, key, partition=partition,
                                       on_delivery=delivery)
                return
            except BufferError:  # librdkafka's queue is full: let it drain (backpressure)
                await asyncio.sleep(QUEUE_FULL_WAIT_S)

    def _settle(self, delivery: _BatchDelivery) -> None:
        if delivery.future.done():  # cancelled by a shutdown
            return
        if not delivery.failed:
            delivery.future.set_result(None)
            return
        delivery.attempt += 1
        telemetry.CHANGELOG_RESENDS.inc(len(delivery.failed))
        backoff = min(RESEND_BACKOFF_S[1], RESEND_BACKOFF_S[0] * 2 ** (delivery.attempt - 1))
        delivery.loop.call_later(backoff, self._resend, delivery)

    def _resend(self, delivery: _BatchDelivery) -> None:
        failed, delivery.failed = delivery.failed, []
        delivery.remaining = len(failed)
        asyncio.ensure_future(self._resend_records(failed, delivery))

    async def _resend_records(self, failed: list[tuple[int, bytes]],
                              delivery: _BatchDelivery) -> None:
        for partition, key in failed:
            await self._produce(partition, key, self.current_value(key), delivery)

    def close(self, timeout_s: float = 10.0) -> int:
        """Deliver what is queued (up to `timeout_s`), stop the poll thread. Returns how many
        records were left undelivered (their batches' offsets were never released)."""
        started = time.monotonic()
        left = self._producer.flush(timeout_s)
        self._closed.set()
        self._poller.join(max(0.0, timeout_s - (time.monotonic() - started)) + POLL_S)
        if left:
            log.warning("%d changelog records undelivered at shutdown; their events will be "
                        "processed again", left)
        return left
