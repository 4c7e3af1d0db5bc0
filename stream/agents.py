"""The consuming agent: hand each event to the micro-batcher, which processes batches and
only then releases their offsets.

Each event is pinned with one extra reference when it arrives. Faust drops its own reference
when the stream moves on; the pin is dropped (`event.ack()`) only after the batch holding the
event was processed, Redis write included, and its history-table changelog records were
acknowledged by the broker. An event is committable only when both are gone,
so a batch interrupted by a crash or a shutdown (Redis down, say) is never committed and is
read again by whoever owns the partition next.
"""

from __future__ import annotations

import asyncio
import logging

import faust
from faust.types import EventT

from recsys.settings import Settings
from stream import telemetry
from stream.decode import Record
from stream.health import ConsumerProgress
from stream.microbatch import MicroBatcher
from stream.processor import BatchProcessor

log = logging.getLogger(__name__)

RETRY_S = 1.0


def _record(event: EventT) -> Record:
    message = event.message
    stamp = message.timestamp  # seconds (float), Kafka's record timestamp
    return Record(topic=message.topic, partition=message.partition, offset=message.offset,
                  key=message.key, value=message.value,
                  timestamp_ms=int(stamp * 1000) if stamp else None)


def register_agents(app: faust.App, topic: faust.TopicT, processor: BatchProcessor,
                    settings: Settings, progress: ConsumerProgress) -> None:
    def release(events: list[EventT]) -> None:
        for event in events:
            event.ack()  # drop the pin: committable once Faust has moved past it too
            progress.processed(event.message.tp, event.message.offset)

    async def process(events: list[EventT]) -> None:
        records = [_record(e) for e in events]
        while True:
            try:
                result = await processor.process(records)
                break
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - e.g. the dead-letter send; keep the batch
                telemetry.BATCH_ERRORS.inc()
                log.exception("batch of %d records failed; retrying", len(records))
                await asyncio.sleep(RETRY_S)
        # Redis has the batch's effects; its offsets are released once its changelog records
        # are acknowledged too. Not awaited here: the next batch need not wait for the broker.
        durable = [f for f in result.durable if not f.done()]
        if not durable:
            release(events)
            return
        waiting = asyncio.gather(*durable)
        waiting.add_done_callback(
            lambda done: release(events) if not done.cancelled() and done.exception() is None
            else None)

    @app.agent(topic, name="fold_in")
    async def fold_in(stream: faust.StreamT) -> None:
        batcher: MicroBatcher[EventT] = MicroBatcher(
            process, settings.stream_batch_max_events, settings.stream_batch_max_ms / 1000.0,
            quiet_s=settings.stream_batch_quiet_ms / 1000.0)
        worker = asyncio.ensure_future(batcher.run())
        try:
            async for event in stream.events():
                if worker.done():
                    worker.result()  # re-raise what stopped it rather than stall
                event.message.incref()  # the pin
                await batcher.add(event)
        finally:
            worker.cancel()
