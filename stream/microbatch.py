"""Adaptive micro-batching between a consuming loop and a batch processor.

The consumer hands items over with `add` and goes straight back to reading; one task takes
them in batches of at most `max_items`. A batch closes when it is full, when no item arrived
for `quiet_s` (the burst of one fetch is over), or `max_wait_s` after the batcher was ready
for it, whichever comes first. So a lone event goes through after `quiet_s`, a steady stream
in batches of one fetch each, and a backlog in big batches: the per-batch costs (one Redis
round trip, one stacked solve) are shared by more events exactly when there are more events.

Faust's own `take_events` cannot do this: it stops the stream while the batch body runs, so
delivery and processing alternate instead of overlapping.

`add` blocks once `max_pending` items wait (backpressure: the consumer stops reading).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


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
        self._arrived.set()

    async def next_batch(self) -> list[T]:
        """Wait for the next batch: full, quiet for `quiet_s`, or `max_wait_s` in the making."""
        while not self._pending:
            self._arrived.clear()
            await self._arrived.wait()
        deadline = time.monotonic() + self.max_wait_s
        while len(self._pending) < self.max_items:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), min(self.quiet_s, remaining))
            except TimeoutError:
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
