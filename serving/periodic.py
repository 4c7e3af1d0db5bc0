"""A background step repeated every few seconds (the catalogue reload, the new-item mapping):
Redis trouble is counted under `operation` and logged, never fatal; the next tick retries."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from redis.exceptions import RedisError

from serving.telemetry import ApiMetrics

log = logging.getLogger(__name__)

# How long to wait for cancelled tasks before asking them again.
CANCEL_RETRY_S = 0.5


async def cancel_and_wait(tasks: Iterable[asyncio.Task]) -> None:
    """Cancel `tasks` and return once every one has ended.

    One request is not always enough: a Redis call whose own timeout fires at the moment its
    task is cancelled ends in TimeoutError instead (an OSError, which the background loops
    catch and survive), and a task awaited after a single cancel() then runs for ever. So the
    request is repeated until each task is done. Their errors are consumed here: a stopping
    loop has nobody left to report to."""
    pending = {task for task in tasks if not task.done()}
    for task in pending:
        task.cancel()
    while pending:
        ended, pending = await asyncio.wait(pending, timeout=CANCEL_RETRY_S)
        for task in pending:
            task.cancel()
        for task in ended:
            if not task.cancelled() and task.exception() is not None:
                log.debug("%s ended with %r while stopping", task.get_name(), task.exception())


class PeriodicTask:
    def __init__(self, name: str, interval_s: float, step: Callable[[], Awaitable[object]],
                 metrics: ApiMetrics, operation: str) -> None:
        self.name, self.interval_s, self.step = name, interval_s, step
        self.metrics, self.operation = metrics, operation
        self._task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.step()
            except (RedisError, OSError) as exc:
                self.metrics.redis_errors.labels(self.operation).inc()
                log.debug("%s failed: %s", self.name, exc)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None
