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

Delivery without a race per message: Faust's consumer loop (`Consumer._drain_messages`) hands
every record to the conductor through `Service.wait_first(callback(message),
suspend_flow.wait())`, which creates four tasks, runs `asyncio.wait` over them and cancels
three, for every single record (a large share of what Faust alone costs per event; figures in
docs/benchmarks.md).
The race only matters when delivery *blocks*: the stream buffer is full, the producer buffer
is over its limit or flow control is suspended for a rebalance. `_Consumer._drain_messages`
is Faust's loop with one change: it runs the callback directly up to its first suspension;
if it finishes without suspending (the common case) nothing else is needed, and only when it
does suspend is the rest of it raced against `suspend_flow` exactly as Faust does. Offsets,
gaps, acks and commits are Faust's own code paths, untouched.

Partitions without a committed offset are rewound after a rebalance: Faust seeks the source
partitions "to their committed offsets" once its table recovery is done, but aiokafka only
seeks partitions that *have* one. Records fetched for the others while the rebalance was in
flight may have been dropped by Faust's `getmany` (it discards records of partitions that are
not active, and a batch whose consumer generation changed mid-iteration), yet the fetch
position has moved past them: seen here as a restarted worker sitting idle at the end of
every partition while nothing had been processed (kill -9 and an immediate restart, so two
rebalances close together; about one run in four). `_Consumer.seek_to_committed` therefore
seeks those partitions to the beginning, which is what `auto_offset_reset=earliest` means for
a group that never committed; re-reading is harmless, the worker's state dedupes by offset.

Holes after a rebalance are read again, not committed past: the same dropped records leave a
hole between the committed offset and the first record delivered after a rebalance, also on
partitions that do have a committed offset. Faust's loop took such a hole for a compaction
gap (`_add_gap`), marked it acked and committed past it: kill -9 under load lost a run of
events right after a kill for good (the chaos scenario worker_kill9: 274 consecutive events
never processed by any later worker). When the fetch stops short of the end offset, the
worker sat idle with lag and nothing in progress. `_Consumer` therefore tracks the next
offset it expects per source partition (from the committed offsets, then each delivered
record): a record beyond it, or a partition whose end is beyond it with nothing delivered
for `STALL_REWIND_S` while no partition delivers anything, makes it seek back to that
offset. A hole that persists after `MAX_REWINDS` seeks is real (compaction, transaction
markers) and is passed on to Faust.

A fetch the broker never answers is abandoned: the consumer keeps one fetch request in flight
per broker and sends no other until it is answered, so one unanswered fetch stops consumption
on every partition at once while the process idles (the chaos scenario
million_random_users_live: the local broker left a FetchRequest pending for minutes while a
fresh connection read the same offsets at once; aiokafka gives up only after the request
timeout, which Faust sets to `broker_request_timeout`). `_bound_fetches` makes a fetch that
gets no answer within `FETCH_TIMEOUT_S` (beyond the fetch wait) fail as a request timeout:
aiokafka's fetcher logs it, the connection is closed and the next fetch goes out on a new
one, from the same positions (nothing is skipped). Counted in
`recsys_stream_fetch_timeouts_total`.

Starved fetches: the local broker (Tansu, memory storage) answers a fetch with no records for
a partition whose high watermark is far beyond the offset asked, error 0, again and again,
while events keep arriving and the worker is behind (measured in million_random_users_live:
offset 91,859 asked, high watermark 158,990, 0 bytes, every fetch, so consumption stops on all
partitions). With a fetch wait of 500 ms instead of 20 ms the same scenario does not stall:
the broker seems to answer with what it found when the wait runs out. So a fetch answered
without records the broker has switches the fetch wait to `STARVED_FETCH_WAIT_MS` until
records come again (`recsys_stream_starved_fetches_total` counts the switches); a broker that
answers as soon as it has data (Apache Kafka) loses nothing by the longer wait.

Install it right after creating the App, before anything touches `app.transport`:

    app.transport = FetchWaitTransport(app.conf.broker_consumer, app, fetch_max_wait_ms=20)
"""

from __future__ import annotations

import asyncio
import logging
import time
import types
from collections.abc import AsyncIterator, Coroutine, Generator, Iterable, Mapping
from typing import Any, cast

import aiokafka
import faust
from aiokafka.client import ConnectionGroup
from aiokafka.conn import CloseReason
from aiokafka.errors import RequestTimedOutError
from aiokafka.record.memory_records import MemoryRecords
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from stream import StreamError, telemetry

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 10.0
STALL_REWIND_S = 3.0  # nothing delivered while the end is ahead: read again from the expected
STARVED_FETCH_WAIT_MS = 500  # the fetch wait while the broker answers without records it has
FETCH_TIMEOUT_S = 5.0  # a fetch unanswered this long after its wait is given up, reconnecting
MAX_REWINDS = 5  # seeks back to the same offset before a hole is taken for a real one


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


def summarize_fetch(request: Any, response: Any) -> dict[str, tuple]:
    """Per partition of a fetch: (offset asked, error code, high watermark, bytes, first and
    last offset returned), for the stall log: a broker answering without the records asked
    for looks the same as one not answering, from the outside."""
    asked = {(topic, p[0]): p[1] for topic, parts in request.topics for p in parts}
    summary = {}
    for topic, partitions in response.topics:
        for partition, error, highwater, *data in partitions:
            records = MemoryRecords(data[-1]) if data and data[-1] else None
            first = last = None
            size = 0
            if records is not None:
                size = records.size_in_bytes()
                while (batch := records.next_batch()) is not None:
                    first = batch.base_offset if first is None else first
                    last = batch.base_offset + getattr(batch, "last_offset_delta", 0)
            summary[f"{topic[-12:]}:{partition}"] = (asked.get((topic, partition)), error,
                                                      highwater, size, first, last)
    return summary


def starved(summary: Mapping[str, tuple]) -> bool:
    """A fetch answer (`summarize_fetch`) without records for a partition whose high
    watermark is beyond the offset asked: the broker has them and did not send them."""
    return any(asked is not None and size == 0 and highwater > asked
               for asked, error, highwater, size, _first, _last in summary.values()
               if error == 0)


def _bound_fetches(consumer: aiokafka.AIOKafkaConsumer, timeout_s: float,
                   starved_wait_ms: int = STARVED_FETCH_WAIT_MS) -> None:
    """Fetch requests of `consumer` that get no answer within `timeout_s` fail as request
    timeouts and close their connection (what aiokafka does after its own, much longer,
    request timeout); other requests are untouched. A fetch answered without records the
    broker has makes the next fetches wait `starved_wait_ms` until records come again."""
    client = consumer._client
    send = client.send
    short_wait_ms = consumer._fetch_max_wait_ms  # the fetcher is created at start()
    last_fetch: dict[str, tuple] = {}
    consumer.recsys_last_fetch = last_fetch  # type: ignore[attr-defined] - the stall log

    async def send_bounded(node_id: int, request: Any, **kwargs: Any) -> Any:
        if not type(request).__name__.startswith("FetchRequest"):
            return await send(node_id, request, **kwargs)
        try:
            response = await asyncio.wait_for(send(node_id, request, **kwargs), timeout_s)
            summary = summarize_fetch(request, response)
            last_fetch.update(summary)
            wait_ms = max(starved_wait_ms, short_wait_ms) if starved(summary) else short_wait_ms
            fetcher = consumer._fetcher
            if wait_ms != fetcher._fetch_max_wait_ms:
                if wait_ms > short_wait_ms:
                    telemetry.STARVED_FETCHES.inc()
                fetcher._fetch_max_wait_ms = wait_ms
            return response
        except TimeoutError as exc:
            telemetry.FETCH_TIMEOUTS.inc()
            log.warning("fetch from broker %s unanswered for %.1f s: reconnecting", node_id,
                        timeout_s)
            group = kwargs.get("group", ConnectionGroup.DEFAULT)
            conn = client._conns.get((node_id, group))
            if conn is not None:
                conn.close(reason=CloseReason.CONNECTION_TIMEOUT)
            raise RequestTimedOutError() from exc

    client.send = send_bounded


def telemetry_rewind(tp: TP) -> None:
    telemetry.CONSUMER_REWINDS.labels(str(tp.partition)).inc()


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
        _bound_fetches(consumer, transport.fetch_max_wait_ms / 1000.0 + FETCH_TIMEOUT_S)
        return consumer


# _drain_messages below mirrors faust-streaming 0.15's loop; re-check it when Faust moves on.
_DRAIN_CHECKED_WITH = ("0.15.",)


@types.coroutine
def _resume(coro: Coroutine[Any, Any, Any], yielded: Any) -> Generator[Any, Any, Any]:
    """Go on running `coro`, which already ran up to a suspension that yielded `yielded`:
    the expansion of `yield from` (PEP 380), so it can be wrapped in a task from there."""
    while True:
        try:
            sent = yield yielded
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # noqa: BLE001 - thrown in (cancellation): pass it on
            try:
                yielded = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                yielded = coro.send(sent)
            except StopIteration as stop:
                return stop.value


class _Consumer(faust_aiokafka.Consumer):
    # Next offset expected per source partition, from the last seek_to_committed on; and
    # (expected offset, seeks back to it) per partition, and when each last delivered.
    _expected: dict[TP, int] = {}  # noqa: RUF012 - replaced per instance, never mutated here
    _rewinds: dict[TP, tuple[int, int]] = {}  # noqa: RUF012
    _delivered_at: dict[TP, float] = {}  # noqa: RUF012
    _last_delivery = 0.0  # any partition's last delivered record (monotonic)

    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def seek_to_committed(self) -> Mapping[TP, int]:
        """Faust's seek to the committed offsets, plus: source partitions that have none go to
        the beginning (see the module docstring). Changelog partitions are the table
        recovery's business and are left alone."""
        committed = await super().seek_to_committed()
        # aiokafka skips offset 0 as well (`if offset and offset > 0`): same treatment.
        never_committed = [tp for tp, offset in committed.items()
                           if (offset is None or offset <= 0) and not self._is_changelog_tp(tp)]
        if never_committed:
            await self._thread.seek_to_beginning(*never_committed)
        # From here on, every record of these partitions is expected in order (the beginning
        # of a never-committed one is 0 unless retention deleted records: then the hole is
        # taken for real after MAX_REWINDS).
        now = time.monotonic()
        self._expected = {tp: max(0, offset or 0) for tp, offset in committed.items()
                          if not self._is_changelog_tp(tp)}
        self._rewinds = {}
        self._delivered_at = dict.fromkeys(self._expected, now)
        self._last_delivery = now
        return committed

    async def _rewind(self, tp: TP, why: str, seen: int | None = None) -> bool:
        """Seek `tp` back to the next offset expected; False once it was tried MAX_REWINDS
        times for that offset (the hole is real)."""
        expected = self._expected[tp]
        key, n = self._rewinds.get(tp, (expected, 0))
        n = n + 1 if key == expected else 1
        self._rewinds[tp] = (expected, n)
        if n > MAX_REWINDS:
            return False
        log.warning("%s:%d: %s (expected offset %d%s); reading again from %d",
                    tp.topic, tp.partition, why, expected,
                    "" if seen is None else f", got {seen}", expected)
        telemetry_rewind(tp)
        await self.seek(tp, expected)
        self._delivered_at[tp] = time.monotonic()
        return True

    async def _rewind_stalled(self) -> None:
        """Partitions whose end is beyond the expected offset with nothing delivered for
        STALL_REWIND_S: the fetch position moved past records nobody delivered. Only while
        the consumer as a whole delivers nothing: a partition that waits its turn behind a
        backlog of others, or behind an event loop busy for seconds, has no hole, and seeking
        it back would throw away what was fetched (a worker far behind then seeks again and
        again and ends up consuming nothing; the chaos scenario million_random_users). A hole
        on a partition that keeps receiving is found by its next record instead."""
        now = time.monotonic()
        if now - self._last_delivery < STALL_REWIND_S:
            return
        for tp, expected in list(self._expected.items()):
            if now - self._delivered_at.get(tp, now) < STALL_REWIND_S:
                continue
            try:
                end = self.highwater(tp)
            except Exception:  # noqa: BLE001 - not known yet: nothing to compare
                continue
            if end is not None and end > expected and self.flow_active:
                await self._rewind(tp, f"nothing delivered for {STALL_REWIND_S:.0f} s while "
                                       f"the end offset is {end}")

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - see tests
        # Faust's Consumer._drain_messages (faust-streaming 0.15.3), variables localised the
        # same way; the one change is marked below.
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(faust_consumer.CONSUMER_FETCHING)
                ait = cast(AsyncIterator, getmany(timeout=1.0))
                await self.sleep(0)
                rewound: set[TP] = set()
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0
                        offset = message.offset
                        # --- second change: a hole is read again, not skipped -----------
                        expected = self._expected  # replaced by every seek_to_committed
                        want = expected.get(tp)
                        if want is not None:
                            if tp in rewound:
                                continue  # fetched before the seek back
                            if offset > want and await self._rewind(
                                    tp, "records missing after a rebalance", offset):
                                rewound.add(tp)
                                continue
                            if offset >= want:
                                expected[tp] = offset + 1
                                self._delivered_at[tp] = self._last_delivery = \
                                    time.monotonic()
                        # ------------------------------------------------------------
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            if gap > 1 and r_offset and acks_enabled_for(message.topic):
                                await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            # --- the change: no race unless delivery blocks ---------------
                            delivery = callback(message)
                            try:
                                yielded = delivery.send(None)
                            except StopIteration:
                                pass  # delivered without waiting
                            else:
                                await self.wait_first(
                                    asyncio.ensure_future(_resume(delivery, yielded)),
                                    self.suspend_flow.wait())
                            # ------------------------------------------------------------
                            set_read_offset(tp, offset)
                    unset_flag(faust_consumer.CONSUMER_FETCHING)
                    await self._rewind_stalled()
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(faust_consumer.CONSUMER_FETCHING)


class FetchWaitTransport(faust_aiokafka.Transport):
    Consumer = _Consumer

    def __init__(self, *args: Any, fetch_max_wait_ms: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not faust.__version__.startswith(_DRAIN_CHECKED_WITH):
            log.warning("faust %s: stream/transport.py's consumer loop mirrors faust %s; "
                        "check it against the new Consumer._drain_messages", faust.__version__,
                        "/".join(_DRAIN_CHECKED_WITH))
        if not 1 <= fetch_max_wait_ms <= 60_000:
            raise StreamError(f"fetch_max_wait_ms must be 1..60000, not {fetch_max_wait_ms}")
        self.fetch_max_wait_ms = int(fetch_max_wait_ms)
