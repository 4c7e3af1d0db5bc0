"""Adaptive micro-batching between a consuming loop and a batch processor.

The consumer hands items over with `add` and goes straight back to reading; one task takes
them in batches of at most `max_items`, waiting at most `max_wait_s` after the first item of a
batch arrived. While a batch is being processed the next one accumulates, so an idle stream
gets its events through after `max_wait_s` at most, and a backlog is worked off in full-sized
batches (the per-batch costs - one Redis round trip, one stacked solve - are shared by more
events exactly when there are more events).

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
                 max_wait_s: float, max_pending: int | None = None) -> None:
        if max_items < 1 or max_wait_s < 0:
            raise ValueError("max_items must be >= 1 and max_wait_s >= 0")
        self.process = process
        self.max_items = max_items
        self.max_wait_s = max_wait_s
        self.max_pending = max(max_pending or 4 * max_items, max_items)
        self._pending: list[T] = []
        self._first_at = 0.0  # monotonic time the oldest pending item arrived
        self._arrived = asyncio.Event()
        self._full = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def add(self, item: T) -> None:
        while len(self._pending) >= self.max_pending:
            self._room.clear()
            await self._room.wait()
        if not self._pending:
            self._first_at = time.monotonic()
        self._pending.append(item)
        self._arrived.set()
        if len(self._pending) >= self.max_items:
            self._full.set()

    async def next_batch(self) -> list[T]:
        """Wait for the next batch: full, or `max_wait_s` old."""
        while not self._pending:
            self._arrived.clear()
            await self._arrived.wait()
        remaining = self.max_wait_s - (time.monotonic() - self._first_at)
        if remaining > 0 and len(self._pending) < self.max_items:
            self._full.clear()
            try:
                await asyncio.wait_for(self._full.wait(), remaining)
            except TimeoutError:
                pass
        batch = self._pending[: self.max_items]
        del self._pending[: self.max_items]
        # Left-overs keep the old arrival time: they are already late, take them next.
        if len(self._pending) < self.max_items:
            self._full.clear()
        self._room.set()
        return batch

    async def run(self) -> None:
        """Process batches forever (cancel to stop; an unprocessed batch is dropped here, which
        is why the caller keeps its items unacknowledged until `process` returned)."""
        while True:
            await self.process(await self.next_batch())
