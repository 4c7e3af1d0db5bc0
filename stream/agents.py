"""The consuming agent: take a micro-batch, hand it to the processor, release its offsets.

`take_events` acks a batch's events when the agent asks for the next batch, or when the
generator is closed, including on cancellation in the middle of a batch (a worker stopping
while Redis is down). Acked means committable, so each event is pinned with one extra
reference while the batch is processed and unpinned only once the Redis write succeeded: an
interrupted batch is never acked, never committed, and is read again by whoever owns the
partition next.
"""

from __future__ import annotations

from collections.abc import Sequence

import faust
from faust.types import EventT

from recsys.settings import Settings
from stream import metrics
from stream.batching import Record
from stream.processor import BatchProcessor


def _pin(events: Sequence[EventT]) -> None:
    for event in events:
        event.message.incref()


def _unpin(events: Sequence[EventT]) -> None:
    for event in events:
        event.message.decref()


def _record(event: EventT) -> Record:
    message = event.message
    return Record(topic=message.topic, partition=message.partition, offset=message.offset,
                  key=message.key, value=message.value)


def _update_lag(app: faust.App, events: Sequence[EventT]) -> None:
    last: dict = {}
    for event in events:
        tp = event.message.tp
        last[tp] = max(last.get(tp, -1), event.message.offset)
    for tp, offset in last.items():
        try:
            highwater = app.consumer.highwater(tp)
        except Exception:  # noqa: BLE001 - lag is best effort; never fail a batch for it
            continue
        if highwater is not None:
            metrics.CONSUMER_LAG.labels(str(tp.partition)).set(max(0, highwater - offset - 1))


def register_agents(app: faust.App, topic: faust.TopicT, processor: BatchProcessor,
                    settings: Settings) -> None:
    max_events = settings.stream_batch_max_events
    within_s = settings.stream_batch_max_ms / 1000.0

    @app.agent(topic, name="fold_in")
    async def fold_in(stream: faust.StreamT) -> None:
        async for events in stream.take_events(max_events, within=within_s):
            _pin(events)
            await processor.process([_record(e) for e in events])
            _unpin(events)
            _update_lag(app, events)
