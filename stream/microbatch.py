"""Adaptive micro-batching between a consuming loop and a batch processor.

The consumer hands items over with `add` and goes straight back to reading; one task takes
them in batches of at most `max_items`. A batch closes when it is full, when a `quiet_s` window
passed without an item (the burst of one fetch is over), or `max_wait_s` after the batcher was
ready for it, whichever comes first. So a lone event goes through after `quiet_s`, a steady stream
in batches of one fetch each, and a backlog in big batches: the per-batch costs (one Redis
round trip, one stacked solve) are shared by more events exactly when there are more events.

Faust's own `take_events` cannot do this: it stops the stream while the batch body runs, so
delivery and processing alternate instead of overlapping.

`add` blocks once `max_pending` items wait (backpressure: the consumer stops reading).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class MicroBatcher(Generic[T]):
    def __init__(self, process: Callable[[list[T]], Awaitable[None]], max_items: int,
                 max_wait_s: float, max_pending: int | None = None,
                 quiet_s: float = 0.002) -> None:
        if max_items < 1 or max_wait_s < 0 or quiet_s < 0:
            raise ValueError("max_items must be >= 1, max_wait_s and quiet_s >= 0")
        self.process = process
        self.max_items = max_items
        self.max_wait_s = max_wait_s
        self.quiet_s = min(quiet_s, max_wait_s)
        self.max_pending = max(max_pending or 4 * max_items, max_items)
        self._pending: list[T] = []
        self._arrived = asyncio.Event()
        self._full: asyncio.Future[None] | None = None  # set when the open batch is full
        self._room = asyncio.Event()
        self._room.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def add(self, item: T) -> None:
        while len(self._pending) >= self.max_pending:
            self._room.clear()
            await self._room.wait()
        self._pending.append(item)
        if len(self._pending) == 1:
            self._arrived.set()
        full = self._full
        if full is not None and len(self._pending) >= self.max_items and not full.done():
            full.set_result(None)

    async def next_batch(self) -> list[T]:
        """Wait for the next batch: full, quiet for `quiet_s`, or `max_wait_s` in the making."""
        while not self._pending:
            self._arrived.clear()
            await self._arrived.wait()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        # Windows of `quiet_s`, each one timer: waking up for every arriving item (a
        # wait_for, i.e. a task and a timer per item) cost more than the rest of the
        # batcher. A window without arrivals ends the batch, so a burst's batch closes
        # between quiet_s and 2 * quiet_s after its last item; a full batch closes at once.
        while len(self._pending) < self.max_items:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            before = len(self._pending)
            self._full = loop.create_future()
            timer = loop.call_later(min(self.quiet_s, remaining), _wake, self._full)
            try:
                await self._full
            finally:
                timer.cancel()
                self._full = None
            if len(self._pending) == before:
                break  # quiet: this burst is over
        batch = self._pending[: self.max_items]
        del self._pending[: self.max_items]
        self._room.set()
        return batch

    async def run(self) -> None:
        """Process batches forever (cancel to stop; an unprocessed batch is dropped here, which
        is why the caller keeps its items unacknowledged until `process` returned)."""
        while True:
            await self.process(await self.next_batch())
