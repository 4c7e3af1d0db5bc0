"""Everything a batch changes in Redis, written in one MULTI/EXEC pipeline, retried until done.

A batch's effects (user vectors, seen sets, popularity) either all land or none do, so a
retry after a dropped connection cannot apply half a batch twice. A failed write is retried
with capped exponential backoff and counted (`recsys_stream_redis_retries_total`); the caller
does not move on, so the batch's offsets are not committed until Redis has its effects.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from redis.exceptions import RedisError

from recsys.keys import POPULARITY_WINDOWS, Keys
from stream import metrics
from stream.popularity import LUA_APPLY, PRUNE_BELOW, REBASE_AFTER_TAUS

log = logging.getLogger(__name__)
T = TypeVar("T")

BACKOFF_INITIAL_S = 0.05


@dataclass(slots=True)
class WritePlan:
    vectors: dict[str, bytes] = field(default_factory=dict)  # user-vector key -> float32 bytes
    seen: dict[str, dict[str, int]] = field(default_factory=dict)  # user -> item -> time ms
    # window -> (t0 seconds, item -> increment relative to t0); see stream.popularity
    popularity: dict[str, tuple[float, dict[str, float]]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.vectors or self.seen or self.popularity)


class RedisWriter:
    def __init__(self, redis: Any, keys: Keys, seen_max: int, backoff_max_s: float = 5.0,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.redis = redis
        self.keys = keys
        self.seen_max = seen_max
        self.backoff_max_s = backoff_max_s
        self._sleep = sleep
        self._popularity = redis.register_script(LUA_APPLY)

    async def write(self, plan: WritePlan) -> None:
        if plan:
            await self._retrying("write", lambda: self._write_once(plan))

    async def exists(self, keys: list[str]) -> list[bool]:
        """EXISTS of each key, in one pipeline (retried like writes)."""
        if not keys:
            return []

        async def once() -> list[bool]:
            pipe = self.redis.pipeline(transaction=False)
            for key in keys:
                pipe.exists(key)
            return [bool(n) for n in await pipe.execute()]

        return await self._retrying("exists", once)

    async def _write_once(self, plan: WritePlan) -> None:
        pipe = self.redis.pipeline(transaction=True)
        for key, raw in plan.vectors.items():
            pipe.set(key, raw)
        for user, items in plan.seen.items():
            seen_key = self.keys.seen(user)
            # GT: a replayed or late event never moves an item's time backwards.
            pipe.zadd(seen_key, items, gt=True)
            pipe.zremrangebyrank(seen_key, 0, -(self.seen_max + 1))
        for window, (t0, increments) in plan.popularity.items():
            args: list[Any] = [POPULARITY_WINDOWS[window], t0, REBASE_AFTER_TAUS, PRUNE_BELOW]
            for item, inc in increments.items():
                args += [item, inc]
            # With a pipeline as client this only queues EVALSHA (the script is loaded at
            # execute time if Redis does not know it).
            await self._popularity(
                keys=[self.keys.popularity(window), self.keys.popularity_ref(window)],
                args=args, client=pipe)
        await pipe.execute()

    async def _retrying(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        delay = BACKOFF_INITIAL_S
        failures = 0
        while True:
            try:
                return await attempt()
            except (RedisError, OSError) as exc:
                failures += 1
                metrics.REDIS_RETRIES.inc()
                if failures == 1 or failures % 20 == 0:
                    log.warning("redis %s failed (%d in a row), retrying: %r", what, failures, exc)
                await self._sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self.backoff_max_s)
