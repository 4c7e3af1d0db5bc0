"""The history table's changelog writer: records Faust can read back, one future per batch,
and a failed delivery sent again with the user's current value.

The round trip through Faust's own table recovery is covered by the worker tests (kill -9 and
restart: the table comes back from these records, every event reflected exactly once)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from recsys.kafka import ensure_topics
from stream import telemetry
from stream.app import create_app
from stream.changelog import ChangelogWriter
from stream.tables import history_table


@pytest.mark.integration
def test_records_reach_the_broker_as_faust_writes_them(settings):
    topic = f"{settings.stream_app_id}-changelog-{uuid.uuid4().hex[:6]}"
    ensure_topics(settings, extra={topic: 2})
    table = history_table(create_app(settings), settings)
    key = table.changelog_key

    async def scenario() -> None:
        writer = ChangelogWriter(settings.kafka_config(), topic, lambda _k: None)
        try:
            first = await writer.send([(0, key("u1"), b"a"), (1, key("ü2"), b"b")])
            second = await writer.send([(0, key("u1"), b"c")])
            empty = await writer.send([])
            assert empty.done()
            await asyncio.wait_for(asyncio.gather(first, second), 15)
        finally:
            writer.close()

    asyncio.run(scenario())

    consumer = Consumer(settings.kafka_config(**{"group.id": f"cl-{uuid.uuid4().hex[:6]}",
                                                 "auto.offset.reset": "earliest"}))
    # Assigned, not subscribed: no group join to wait for.
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in (0, 1)])
    got: list[tuple[int, bytes, bytes]] = []
    deadline = time.monotonic() + 20
    while len(got) < 3 and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            got.append((msg.partition(), msg.key(), msg.value()))
    consumer.close()
    assert sorted(got) == [(0, b'"u1"', b"a"), (0, b'"u1"', b"c"), (1, '"ü2"'.encode(), b"b")]
    # Per partition in the order sent: replaying the changelog ends at the newest value.
    assert [v for p, _k, v in got if p == 0] == [b"a", b"c"]
    decode = table.app.serializers.loads_key
    assert decode(str, key("ü2"), serializer=table.key_serializer) == "ü2"


class _Message:
    def __init__(self, partition: int, key: bytes) -> None:
        self._partition, self._key = partition, key

    def partition(self) -> int:
        return self._partition

    def key(self) -> bytes:
        return self._key


class FlakyProducer:
    """confluent-kafka's producer surface; fails the first `failures` deliveries and raises
    BufferError (queue full) on the first produce call."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.produced: list[tuple[int, bytes, bytes | None]] = []
        self._pending: list = []
        self._lock = threading.Lock()
        self._full_once = True

    def produce(self, topic, value, key, partition, on_delivery):
        if self._full_once:
            self._full_once = False
            raise BufferError("queue full")
        with self._lock:
            self.produced.append((partition, key, value))
            self._pending.append((on_delivery, _Message(partition, key)))

    def poll(self, timeout):
        time.sleep(0.005)
        with self._lock:
            pending, self._pending = self._pending, []
        for callback, msg in pending:
            failed = self.failures > 0
            self.failures -= failed
            callback(KafkaError(KafkaError._MSG_TIMED_OUT) if failed else None, msg)
        return len(pending)

    def flush(self, timeout):
        return 0


def test_a_failed_record_is_sent_again_with_the_current_value():
    table = {b'"u1"': b"v1", b'"u2"': b"w1"}
    producer = FlakyProducer(failures=1)
    resends = telemetry.CHANGELOG_RESENDS._value.get()

    async def scenario() -> None:
        writer = ChangelogWriter({}, "t", table.get, producer=producer)
        try:
            done = await writer.send([(0, b'"u1"', b"v1"), (1, b'"u2"', b"w1")])
            table[b'"u1"'] = b"v2"  # a newer batch changed u1 while the first one was failing
            await asyncio.sleep(0.05)
            assert not done.done()  # u1's record failed: its batch is not durable yet
            await asyncio.wait_for(done, 5)
        finally:
            writer.close()

    asyncio.run(scenario())
    # The failed record went again with u1's value as it is now, never the older one.
    assert producer.produced == [(0, b'"u1"', b"v1"), (1, b'"u2"', b"w1"), (0, b'"u1"', b"v2")]
    assert telemetry.CHANGELOG_RESENDS._value.get() == resends + 1
