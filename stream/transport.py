"""The aiokafka transport with a configurable fetch wait and exact end offsets.

Faust creates its worker consumer with `fetch_max_wait_ms=1500` hard-coded
(faust/transport/drivers/aiokafka.py, `_create_worker_consumer`). A broker that always waits
that long before answering a fetch (the local Tansu broker does, even when data is there) then
adds up to 1.5 s to every event's latency. This transport builds the consumer exactly as
Faust does and only replaces that one value, before the consumer starts (aiokafka hands it to
its fetcher in `start()`).

Exact end offsets: Faust restores a table by reading each changelog partition up to its end
offset ("highwater"). The local Tansu broker reports the end offset as the *base offset of the
last record batch + 1*, not the last offset + 1 (measured: five records produced in one batch,
end offset 1). Recovery then stops inside the last batch and the newest values of a moved or
restarted partition are silently lost. `_highwaters` therefore reads from the reported end - 1
with a throw-away consumer and takes the offset after the last record it sees. On a broker that
reports correctly this finds the same number, at the cost of one short fetch per recovery.

Install it right after creating the App, before anything touches `app.transport`:

    app.transport = FetchWaitTransport(app.conf.broker_consumer, app, fetch_max_wait_ms=20)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

import aiokafka
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from stream import StreamError

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 10.0


async def exact_end_offsets(reported: Mapping[Any, int], bootstrap_servers: Any,
                            fetch_max_wait_ms: int = 20, **client: Any) -> dict[Any, int]:
    """End offsets (offset after the last record) of the partitions in `reported` (topic,
    partition tuples -> end offset as the broker reported it), confirmed by reading from
    reported - 1: the whole last record batch comes back, and its last record is the end."""
    exact = dict(reported)
    todo = {tp: end for tp, end in reported.items() if end}
    if not todo:
        return exact
    probe = aiokafka.AIOKafkaConsumer(bootstrap_servers=bootstrap_servers,
                                      enable_auto_commit=False,
                                      fetch_max_wait_ms=fetch_max_wait_ms, **client)
    await probe.start()
    try:
        wanted = {aiokafka.TopicPartition(tp[0], tp[1]): tp for tp in todo}
        probe.assign(list(wanted))
        for atp, tp in wanted.items():
            probe.seek(atp, todo[tp] - 1)
        pending = set(wanted)
        deadline = time.monotonic() + PROBE_TIMEOUT_S
        while pending and time.monotonic() < deadline:
            fetched = await probe.getmany(timeout_ms=200)
            for atp, records in fetched.items():
                if records and atp in pending:
                    tp = wanted[atp]
                    exact[tp] = max(exact[tp], records[-1].offset + 1)
                    pending.discard(atp)
        if pending:
            log.warning("could not confirm the end offset of %s; using the reported one",
                        sorted(pending))
    finally:
        await probe.stop()
    return exact


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    async def _highwaters(self, partitions: Iterable[TP]) -> Mapping[TP, int]:
        reported = dict(await super()._highwaters(partitions))
        conf = self.app.conf
        transport: Any = self.transport
        exact = await exact_end_offsets(
            reported, faust_aiokafka.server_list(transport.url, transport.default_port),
            transport.fetch_max_wait_ms, request_timeout_ms=int(conf.broker_request_timeout * 1000),
            **faust_aiokafka.credentials_to_aiokafka_auth(conf.broker_credentials,
                                                          conf.ssl_context))
        moved = {f"{tp.topic}:{tp.partition}": (reported[tp], exact[tp])
                 for tp in reported if exact[tp] != reported[tp]}
        if moved:
            log.info("end offsets corrected (reported, actual): %s", moved)
        return exact

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
