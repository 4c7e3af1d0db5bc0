"""A background step repeated every few seconds (the catalogue reload, the new-item mapping):
Redis trouble is counted under `operation` and logged, never fatal; the next tick retries."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError

from serving.telemetry import ApiMetrics

log = logging.getLogger(__name__)


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
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
