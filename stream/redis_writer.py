"""Everything a batch changes in Redis, written in one MULTI/EXEC pipeline (one node), or in
one pipeline of single-slot commands and scripts (Redis Cluster, where a transaction cannot
span slots: each user bucket's seen sets go in one script, each window's popularity in one).

Errors are classified:

* retryable (connection refused or dropped, timeout, LOADING, READONLY during a failover):
  the write is retried with capped exponential backoff, counted
  (`recsys_stream_redis_retries_total`), at most `stream_redis_max_attempts` times; then
  `RedisUnavailable` is raised. The processor keeps the batch (its offsets are not committed)
  and tries again, while the worker's health check reports the stall (stream.health).
* non-retryable (an error reply: OOM, WRONGTYPE, a script error): retrying cannot help.
  `RedisRejected` is raised at once with a short reason (`redis_oom`, `redis_wrongtype`,
  `redis_error`); the processor then writes the batch user by user (`write_each`) and
  dead-letters only the events of the users whose writes Redis refused.

Every effect is idempotent, so a retry after a timeout whose command did execute changes
nothing (and in a cluster, a batch written half-way before a crash is simply written again
when its uncommitted events are replayed): HSET of the same vectors, ZADD GT of the same
times, and popularity increments guarded by the batch's id (LUA_APPLY skips a batch id it
has applied already) and by offset watermarks per partition (a replay by another process
after a crash counts nothing twice).
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
from redis.exceptions import (
    BusyLoadingError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from recsys.erasure import aerase_user
from recsys.keys import POPULARITY_WINDOWS, Keys
from stream import StreamError, telemetry
from stream.trending import LUA_APPLY, PRUNE_BELOW, REBASE_AFTER_TAUS

log = logging.getLogger(__name__)
T = TypeVar("T")

BACKOFF_INITIAL_S = 0.05

# Every seen set of a batch in one command. KEYS = the users' seen sets; ARGV[1] = how many
# items to keep, ARGV[2] = JSON list (one entry per key) of [time ms, item, time ms, item, ...],
# ARGV[3] = TTL of a seen set in ms (0 = none). GT: a replayed or late event never moves an
# item's time backwards. ZADD gets at most SEEN_CHUNK pairs per call: Lua's unpack() fails
# beyond ~8000 values ("too many results to unpack"), which one user with thousands of items
# in a batch reaches.
SEEN_CHUNK = 1000
LUA_SEEN = """
local keep = tonumber(ARGV[1])
local per_key = cjson.decode(ARGV[2])
local ttl = tonumber(ARGV[3])
local step = 2 * SEEN_CHUNK
for k = 1, #KEYS do
  local args = per_key[k]
  for i = 1, #args, step do
    redis.call('ZADD', KEYS[k], 'GT', unpack(args, i, math.min(i + step - 1, #args)))
  end
  redis.call('ZREMRANGEBYRANK', KEYS[k], 0, -(keep + 1))
  if ttl > 0 then
    redis.call('PEXPIRE', KEYS[k], ttl)
  end
end
return #KEYS
""".replace("SEEN_CHUNK", str(SEEN_CHUNK))


# Item vectors of the item fold-in under one version (stream.item_foldin), all in one script:
# KEYS = the version's item-vector hash, its counter, its updated zset; ARGV = item, vector,
# item, vector... The counter moves once per write and every item written takes its value in
# `updated`: an API process that read the counter at s and then the items scored <= s has
# every vector written up to s (the script is atomic). A retried write bumps the counter
# again and rewrites the same vectors: readers merge them once more, harmlessly.
LUA_ITEM_VECTORS = """
local seq = redis.call('INCR', KEYS[2])
for i = 1, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('ZADD', KEYS[3], seq, ARGV[i])
end
return seq
"""


class RedisUnavailable(StreamError):
    """Retryable Redis errors persisted through every allowed attempt."""


class RedisRejected(StreamError):
    """Redis answered with an error that retrying cannot fix (OOM, WRONGTYPE, script)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


RETRYABLE = (RedisConnectionError, RedisTimeoutError, BusyLoadingError, ReadOnlyError, OSError)


def rejection_reason(exc: BaseException) -> str:
    """Dead-letter reason of a non-retryable Redis error reply."""
    text = str(exc)
    # redis-py raises OutOfMemoryError for an OOM reply (and drops the "OOM" prefix)
    if isinstance(exc, OutOfMemoryError) or text.startswith("OOM") or "maxmemory" in text:
        return "redis_oom"
    if "WRONGTYPE" in text:
        return "redis_wrongtype"
    return "redis_error"


@dataclass(slots=True)
class WritePlan:
    # user-vector hash (one per model version) -> user -> float32 bytes
    vectors: dict[str, dict[str, bytes]] = field(default_factory=dict)
    seen: dict[str, dict[str, int]] = field(default_factory=dict)  # user -> item -> time ms
    # user -> item -> whether its net feedback is negative now (hidden from the user's lists)
    hidden: dict[str, dict[str, bool]] = field(default_factory=dict)
    # window -> (t0 seconds, partition -> [(offset, item, increment relative to t0)]) of
    # the source topic `popularity_topic`; see stream.trending
    popularity: dict[str, tuple[float, dict[str, list[tuple[int, str, float]]]]] = field(
        default_factory=dict)
    popularity_topic: str = ""
    # version -> item -> float32 bytes: the item fold-in's vectors (stream.item_foldin)
    item_vectors: dict[str, dict[str, bytes]] = field(default_factory=dict)
    # Names this plan's popularity increments: a retry of the same plan is applied once.
    batch_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __bool__(self) -> bool:
        return bool(self.vectors or self.seen or self.popularity or self.item_vectors)

    def for_user(self, user: str) -> WritePlan:
        """The part of this plan that concerns one user (no popularity)."""
        part = WritePlan(batch_id=self.batch_id)
        for hash_key, vectors in self.vectors.items():
            if user in vectors:
                part.vectors[hash_key] = {user: vectors[user]}
        if user in self.seen:
            part.seen[user] = self.seen[user]
        if user in self.hidden:
            part.hidden[user] = self.hidden[user]
        return part

    def popularity_only(self) -> WritePlan:
        return WritePlan(popularity=self.popularity, popularity_topic=self.popularity_topic,
                         batch_id=self.batch_id)


class RedisWriter:
    def __init__(self, redis: Any, keys: Keys, seen_max: int, backoff_max_s: float = 5.0,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 max_attempts: int = 10, seen_ttl_s: float = 0.0,
                 batch_guard_ttl_s: float = 600.0) -> None:
        self.redis = redis
        self.keys = keys
        self.seen_max = seen_max
        self.backoff_max_s = backoff_max_s
        self.max_attempts = max_attempts
        self.seen_ttl_ms = int(seen_ttl_s * 1000)
        self.batch_guard_ttl_ms = max(1, int(batch_guard_ttl_s * 1000))
        self._sleep = sleep

    async def write(self, plan: WritePlan) -> None:
        """All of a plan's effects in one transaction. Raises RedisUnavailable after the
        allowed attempts, RedisRejected at once for an error reply."""
        if plan:
            await self._retrying("write", lambda: self._write_once(plan))

    async def write_each(self, plan: WritePlan
                         ) -> tuple[dict[str, RedisRejected], RedisRejected | None]:
        """After a RedisRejected: the plan's popularity, then each user's part, on its own.
        Returns the users whose writes Redis refused (with why), whose events are the ones to
        dead-letter, and why the popularity write was refused (None if it was written): the
        batch's events then did not count in trending and are dead-lettered too."""
        refused: dict[str, RedisRejected] = {}
        popularity_refused: RedisRejected | None = None
        if plan.popularity:
            try:
                await self.write(plan.popularity_only())
            except RedisRejected as exc:
                log.error("redis refused the batch's popularity update: %s", exc)
                popularity_refused = exc
        if plan.item_vectors:
            try:
                await self.write(WritePlan(item_vectors=plan.item_vectors,
                                           batch_id=plan.batch_id))
            except RedisRejected as exc:  # the items' next events fold them in again
                log.error("redis refused the batch's item vectors: %s", exc)
        users = set(plan.seen)
        for vectors in plan.vectors.values():
            users.update(vectors)
        for user in sorted(users):
            try:
                await self.write(plan.for_user(user))
            except RedisRejected as exc:
                refused[user] = exc
        return refused, popularity_refused

    async def erase_user(self, user: str) -> int:
        """Delete a user's vectors (every version) and seen set (recsys.erasure)."""
        return await self._retrying(
            "erase", lambda: aerase_user(self.redis, self.keys, user, for_trainer=False))

    async def call(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """Any other Redis call with the writer's retries and error classification
        (RedisUnavailable after the allowed attempts, RedisRejected for an error reply)."""
        return await self._retrying(what, attempt)

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

    async def vectors_exist(self, version: str, users: list[str]) -> list[bool]:
        """Whether each user has a vector under `version` (in its hash or bucket), in one
        pipeline (retried like writes)."""
        if not users:
            return []

        async def once() -> list[bool]:
            pipe = self.redis.pipeline(transaction=False)
            for user in users:
                pipe.hexists(self.keys.user_vector_hash(version, user), user)
            return [bool(n) for n in await pipe.execute()]

        return await self._retrying("exists", once)

    async def _write_once(self, plan: WritePlan) -> None:
        # A constant number of commands per batch, however many users: packing commands is
        # a large share of a batch's CPU in the Redis client. EVAL, not EVALSHA: a registered
        # script in a pipeline costs an extra SCRIPT EXISTS round trip per batch, and EVALSHA
        # inside MULTI could fail half a transaction after a Redis restart (NOSCRIPT).
        pipe = self.redis.pipeline(transaction=not self.keys.cluster)
        for hash_key, vectors in plan.vectors.items():
            if vectors:
                pipe.hset(hash_key, mapping=vectors)
        seen = {user: items for user, items in plan.seen.items() if items}
        for users in self.keys.same_slot_groups(list(seen)):
            per_key = [[x for item, ms in seen[user].items() for x in (ms, item)]
                       for user in users]
            pipe.eval(LUA_SEEN, len(users), *[self.keys.seen(user) for user in users],
                      self.seen_max, orjson.dumps(per_key), self.seen_ttl_ms)
        for user, flags in plan.hidden.items():
            # SADD/SREM are idempotent: a replayed batch sets the same flags again.
            hide = [item for item, negative in flags.items() if negative]
            show = [item for item, negative in flags.items() if not negative]
            key = self.keys.hidden(user)
            if show:
                pipe.srem(key, *show)
            if hide:
                pipe.sadd(key, *hide)
                if self.seen_ttl_ms:
                    pipe.pexpire(key, self.seen_ttl_ms)
        for version, items in plan.item_vectors.items():
            if items:
                pipe.eval(LUA_ITEM_VECTORS, 3, self.keys.item_vectors(version),
                          self.keys.item_vectors_seq(version),
                          self.keys.item_vectors_updated(version),
                          *[x for pair in items.items() for x in pair])
        for window, (t0, increments) in plan.popularity.items():
            pipe.eval(LUA_APPLY, 4, self.keys.popularity(window),
                      self.keys.popularity_ref(window),
                      self.keys.popularity_batch(window, plan.batch_id),
                      self.keys.popularity_applied(window, plan.popularity_topic),
                      POPULARITY_WINDOWS[window], t0, REBASE_AFTER_TAUS, PRUNE_BELOW,
                      orjson.dumps(increments), self.batch_guard_ttl_ms)
        await pipe.execute()

    async def _retrying(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        delay = BACKOFF_INITIAL_S
        failures = 0
        while True:
            try:
                return await attempt()
            except RETRYABLE as exc:
                error: BaseException = exc
            except ResponseError as exc:  # an error reply: the same command fails again
                reason = rejection_reason(exc)
                telemetry.REDIS_REJECTED.labels(reason).inc()
                raise RedisRejected(reason, str(exc)[:300]) from exc
            except RedisError as exc:  # anything else the client raises: treat as transient
                error = exc
            failures += 1
            telemetry.REDIS_RETRIES.inc()
            if failures >= self.max_attempts:
                raise RedisUnavailable(f"redis {what} failed {failures} times in a row: "
                                       f"{error!r}") from error
            if failures == 1 or failures % 20 == 0:
                log.warning("redis %s failed (%d in a row), retrying: %r", what, failures, error)
            await self._sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, self.backoff_max_s)
