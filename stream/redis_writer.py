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

import orjson
from redis.exceptions import RedisError

from recsys.keys import POPULARITY_WINDOWS, Keys
from stream import telemetry
from stream.popularity import LUA_APPLY, PRUNE_BELOW, REBASE_AFTER_TAUS

log = logging.getLogger(__name__)
T = TypeVar("T")

BACKOFF_INITIAL_S = 0.05

# Every seen set of a batch in one command. KEYS = the users' seen sets; ARGV[1] = how many
# items to keep, ARGV[2] = JSON list (one entry per key) of [time ms, item, time ms, item, ...].
# GT: a replayed or late event never moves an item's time backwards.
LUA_SEEN = """
local keep = tonumber(ARGV[1])
local per_key = cjson.decode(ARGV[2])
for k = 1, #KEYS do
  redis.call('ZADD', KEYS[k], 'GT', unpack(per_key[k]))
  redis.call('ZREMRANGEBYRANK', KEYS[k], 0, -(keep + 1))
end
return #KEYS
"""


@dataclass(slots=True)
class WritePlan:
    # user-vector hash (one per model version) -> user -> float32 bytes
    vectors: dict[str, dict[str, bytes]] = field(default_factory=dict)
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

    async def write(self, plan: WritePlan) -> None:
        if plan:
            await self._retrying("write", lambda: self._write_once(plan))

    async def exists(self, hash_key: str, fields: list[str]) -> list[bool]:
        """HEXISTS of each field of one hash, in one pipeline (retried like writes)."""
        if not fields:
            return []

        async def once() -> list[bool]:
            pipe = self.redis.pipeline(transaction=False)
            for name in fields:
                pipe.hexists(hash_key, name)
            return [bool(n) for n in await pipe.execute()]

        return await self._retrying("exists", once)

    async def _write_once(self, plan: WritePlan) -> None:
        # A constant number of commands per batch, however many users: packing commands is
        # a large share of a batch's CPU in the Redis client. EVAL, not EVALSHA: a registered
        # script in a pipeline costs an extra SCRIPT EXISTS round trip per batch, and EVALSHA
        # inside MULTI could fail half a transaction after a Redis restart (NOSCRIPT).
        pipe = self.redis.pipeline(transaction=True)
        for hash_key, vectors in plan.vectors.items():
            if vectors:
                pipe.hset(hash_key, mapping=vectors)
        seen = {user: items for user, items in plan.seen.items() if items}
        if seen:
            per_key = [[x for item, ms in items.items() for x in (ms, item)]
                       for items in seen.values()]
            pipe.eval(LUA_SEEN, len(seen), *[self.keys.seen(user) for user in seen],
                      self.seen_max, orjson.dumps(per_key))
        for window, (t0, increments) in plan.popularity.items():
            pipe.eval(LUA_APPLY, 2, self.keys.popularity(window),
                      self.keys.popularity_ref(window), POPULARITY_WINDOWS[window], t0,
                      REBASE_AFTER_TAUS, PRUNE_BELOW, orjson.dumps(increments))
        await pipe.execute()

    async def _retrying(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        delay = BACKOFF_INITIAL_S
        failures = 0
        while True:
            try:
                return await attempt()
            except (RedisError, OSError) as exc:
                failures += 1
                telemetry.REDIS_RETRIES.inc()
                if failures == 1 or failures % 20 == 0:
                    log.warning("redis %s failed (%d in a row), retrying: %r", what, failures, exc)
                await self._sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self.backoff_max_s)
