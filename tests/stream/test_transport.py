"""The transport's two fixes, against the real broker: the consumer's fetch wait comes from
the settings, and end offsets count every record of the last batch."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from confluent_kafka import Producer

from recsys.kafka import ensure_topics
from stream.app import create_app
from stream.transport import FetchWaitTransport, exact_end_offsets

pytestmark = pytest.mark.integration


def test_exact_end_offsets_count_the_whole_last_batch(settings):
    ensure_topics(settings)
    topic = settings.interactions_topic
    producer = Producer(settings.kafka_config(**{"linger.ms": 50}))
    for n in range(5):  # one linger window: one record batch
        producer.produce(topic, key=b"k", value=b"%d" % n, partition=0)
    for n in range(3):
        producer.produce(topic, key=b"k", value=b"%d" % n, partition=1)
    assert producer.flush(10) == 0

    async def ends():
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(3)]
            reported = await consumer.end_offsets(tps)
        finally:
            await consumer.stop()
        exact = await exact_end_offsets(reported, settings.kafka_bootstrap_servers)
        return reported, exact

    reported, exact = asyncio.run(ends())
    # (The local broker reports 1 for partition 0 here; Apache Kafka reports 5.)
    assert [exact[TopicPartition(topic, p)] for p in range(3)] == [5, 3, 0]
    assert all(exact[tp] >= reported[tp] for tp in reported)


def test_the_app_consumer_uses_the_configured_fetch_wait(settings):
    s = settings.model_copy(update={"stream_fetch_max_wait_ms": 37})
    app = create_app(s)
    assert isinstance(app.transport, FetchWaitTransport)

    async def build():
        # What the consumer thread creates at start-up (aiokafka wants a running loop).
        return app.consumer._thread._create_worker_consumer(app.transport)

    assert asyncio.run(build())._fetch_max_wait_ms == 37


def test_a_partition_behind_a_busy_consumer_is_not_seeked_back_only_an_idle_one() -> None:
    import asyncio
    import time

    from faust.types import TP

    from stream import transport

    class Probe(transport._Consumer):
        flow_active = True  # no rebalance in progress

    consumer = object.__new__(Probe)  # the stall rule only: no broker, no Faust app
    tp = TP("interactions", 0)
    seeks: list[tuple[TP, int]] = []

    async def seek(tp_: TP, offset: int) -> None:
        seeks.append((tp_, offset))

    long_ago = time.monotonic() - 10 * transport.STALL_REWIND_S
    consumer.__dict__.update(_expected={tp: 100}, _rewinds={}, _delivered_at={tp: long_ago},
                             seek=seek, highwater=lambda _tp: 5000)
    # another partition delivered just now: this one waits its turn behind them, no seek
    consumer._last_delivery = time.monotonic()
    asyncio.run(consumer._rewind_stalled())
    assert seeks == []
    # nothing delivered anywhere for the stall time while the end is ahead: read again
    consumer._last_delivery = long_ago
    asyncio.run(consumer._rewind_stalled())
    assert seeks == [(tp, 100)]


def test_a_fetch_the_broker_leaves_unanswered_is_given_up_and_sent_again(settings):
    """The stall of the chaos scenario million_random_users_live: one fetch request never
    answered on its connection stops the consumer (one fetch in flight per broker). Injected
    here by no longer reading the connection's socket; the bounded fetch reconnects and every
    record is consumed, long before aiokafka's own request timeout."""
    from aiokafka.client import ConnectionGroup

    from stream import telemetry
    from stream.transport import _bound_fetches

    topic = f"{settings.interactions_topic}.unanswered"
    ensure_topics(settings.model_copy(update={"interactions_topic": topic,
                                              "topic_partitions": 1}))
    producer = Producer(settings.kafka_config())

    def produce(first: int, n: int) -> None:
        for k in range(first, first + n):
            producer.produce(topic, key=b"k", value=str(k).encode(), partition=0)
        assert producer.flush(10) == 0

    async def consume() -> tuple[list[int], float]:
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers,
                                    enable_auto_commit=False, fetch_max_wait_ms=20,
                                    request_timeout_ms=60_000)
        await consumer.start()
        _bound_fetches(consumer, 1.0)
        timeouts = telemetry.FETCH_TIMEOUTS._value.get()
        try:
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            consumer.seek(tp, 0)
            seen: list[int] = []
            while len(seen) < 20:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    seen += [int(r.value) for r in records]
            node = consumer._client.cluster.leader_for_partition(tp)
            conn = consumer._client._conns[(node, ConnectionGroup.DEFAULT)]
            conn._reader._transport.pause_reading()  # answers on this connection never arrive
            produce(20, 20)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 15
            while len(seen) < 40 and loop.time() < deadline:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    seen += [int(r.value) for r in records]
            return seen, telemetry.FETCH_TIMEOUTS._value.get() - timeouts
        finally:
            await consumer.stop()

    produce(0, 20)
    seen, timeouts = asyncio.run(consume())
    assert sorted(set(seen)) == list(range(40))
    assert timeouts >= 1


def test_a_fetch_answered_without_records_the_broker_has_is_starved():
    from stream.transport import starved

    # (offset asked, error, high watermark, bytes, first offset, last offset) per partition
    assert starved({"t:0": (91_859, 0, 158_990, 0, None, None),
                    "t:1": (10, 0, 500, 4096, 10, 60)})
    assert not starved({"t:0": (100, 0, 100, 0, None, None)})  # at the end: nothing to send
    assert not starved({"t:0": (90, 0, 100, 2048, 90, 99)})
    assert not starved({"t:0": (90, 1, 100, 0, None, None)})  # an error answer is not starved
