"""The aiokafka transport with a configurable fetch wait.

Faust creates its worker consumer with `fetch_max_wait_ms=1500` hard-coded
(faust/transport/drivers/aiokafka.py, `_create_worker_consumer`). A broker that always waits
that long before answering a fetch (the local Tansu broker does, even when data is there) then
adds up to 1.5 s to every event's latency. This transport builds the consumer exactly as
Faust does and only replaces that one value, before the consumer starts (aiokafka hands it to
its fetcher in `start()`).

Install it right after creating the App, before anything touches `app.transport`:

    app.transport = FetchWaitTransport(app.conf.broker_consumer, app, fetch_max_wait_ms=20)
"""

from __future__ import annotations

from typing import Any

import aiokafka
from faust.transport.drivers import aiokafka as faust_aiokafka

from stream import StreamError


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        if not hasattr(consumer, "_fetch_max_wait_ms"):
            raise StreamError(
                f"aiokafka {aiokafka.__version__} no longer has AIOKafkaConsumer."
                "_fetch_max_wait_ms; stream/transport.py must be adapted"
            )
        consumer._fetch_max_wait_ms = transport.fetch_max_wait_ms
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class FetchWaitTransport(faust_aiokafka.Transport):
    Consumer = _Consumer

    def __init__(self, *args: Any, fetch_max_wait_ms: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not 1 <= fetch_max_wait_ms <= 60_000:
            raise StreamError(f"fetch_max_wait_ms must be 1..60000, not {fetch_max_wait_ms}")
        self.fetch_max_wait_ms = int(fetch_max_wait_ms)
