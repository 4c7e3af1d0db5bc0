"""Learning of model switches, shared by the stream worker and the API.

The trainer moves the `current` pointer and then publishes the new id on the switch channel
(recsys.modelstore.activate_version). `ModelSwitchWatcher` listens on that channel and, as a
fallback for a missed message (a reconnect, a process that started in between), re-reads the
pointer every `poll_s`. Either way the pointer is the truth: a message only triggers a check.

A version that differs from the one in use is loaded completely by the role's `load` (off
the event loop where it is heavy) and only then handed to its `install`, which swaps it in
with one reference assignment: a reader that took the current version once computes with
exactly that version (no mixed versions). What a role does on a switch (the stream worker
recomputes its users, the API swaps factors and catalogue state) is its `install`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from redis.exceptions import RedisError

from recsys.errors import ModelIntegrityError, ModelNotFound
from recsys.keys import Keys
from recsys.modelstore import aread_current_version

log = logging.getLogger(__name__)

M = TypeVar("M")

# What a broken version raises while it is read: counted as a load failure, the version in
# use stays. (A Redis outage is not the version's fault and is reported as such.)
LOAD_ERRORS: tuple[type[Exception], ...] = (ModelNotFound, ModelIntegrityError, KeyError,
                                            ValueError)
# Pub/sub reads this long at most, so that stop() (a flag: redis-py's pub/sub read can
# swallow a cancellation) is noticed promptly.
STOP_CHECK_S = 0.5


class ModelSwitchWatcher(Generic[M]):
    """Learns of a switch (pub/sub + poll), loads the version, hands it to the role.

    in_use()          -> the version id the role serves now (None before the first)
    load(version)     -> the role's loaded form of that version (awaitable)
    install(loaded)   -> swaps it in (may be a coroutine function)
    listener()        -> a Redis client for the switch channel, closed by the watcher when
                         the channel is lost (default: `redis` itself, never closed here)
    failed_retry_s    -> a version that failed to load is not tried again for this long
    load_errors       -> the exceptions of `load` that mean "this version is broken"
    on_load_error(version, exc), on_redis_error(where, exc) -> the role's metrics
    """

    def __init__(self, redis: Any, keys: Keys, *, poll_s: float,
                 in_use: Callable[[], str | None], load: Callable[[str], Awaitable[M]],
                 install: Callable[[M], Awaitable[Any] | Any],
                 listener: Callable[[], Any] | None = None, failed_retry_s: float = 0.0,
                 load_errors: tuple[type[Exception], ...] = LOAD_ERRORS,
                 resubscribe_s: float = 1.0,
                 on_load_error: Callable[[str, Exception], None] | None = None,
                 on_redis_error: Callable[[str, Exception], None] | None = None) -> None:
        self.redis = redis
        self.keys = keys
        self.poll_s = poll_s
        self.in_use = in_use
        self.load = load
        self.install = install
        self.listener = listener
        self.failed_retry_s = failed_retry_s
        self.load_errors = load_errors
        self.resubscribe_s = resubscribe_s
        self.on_load_error = on_load_error
        self.on_redis_error = on_redis_error
        self._lock = asyncio.Lock()
        self._failed: dict[str, float] = {}
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> bool:
        """Load and install the version the pointer names if it is not the one in use.

        True when a new version was installed. Redis errors propagate.
        """
        version = await aread_current_version(self.redis, self.keys)
        if version is None or version == self.in_use():
            return False
        retry_at = self._failed.get(version)
        if retry_at is not None and time.monotonic() < retry_at:
            return False
        async with self._lock:
            if version == self.in_use():
                return False
            log.debug("loading model version %s", version)
            try:
                loaded = await self.load(version)
            except self.load_errors as exc:
                self._failed[version] = time.monotonic() + self.failed_retry_s
                if self.on_load_error is not None:
                    self.on_load_error(version, exc)
                log.error("cannot load model version %s (keeping %s): %r", version,
                          self.in_use() or "none", exc)
                return False
            self._failed.pop(version, None)
            installed = self.install(loaded)
            if inspect.isawaitable(installed):
                await installed
            return True

    async def check(self) -> bool:
        """`refresh`, with a Redis outage reported and the version in use kept."""
        try:
            return await self.refresh()
        except (RedisError, OSError) as exc:
            self._redis_error("refresh", exc)
            log.warning("model refresh failed (keeping %s): %r", self.in_use() or "no model",
                        exc)
            return False

    def _redis_error(self, where: str, exc: Exception) -> None:
        if self.on_redis_error is not None:
            self.on_redis_error(where, exc)

    async def run(self) -> None:
        """Until stop(): check, then wait for a switch message or the poll interval."""
        self._stopping = False
        while not self._stopping:
            client = self.redis if self.listener is None else self.listener()
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.keys.model_switch_channel)
                while True:
                    # Also right after (re)subscribing: a switch may have happened meanwhile.
                    await self.check()
                    deadline = time.monotonic() + self.poll_s
                    while (left := deadline - time.monotonic()) > 0:
                        message = await pubsub.get_message(timeout=min(left, STOP_CHECK_S))
                        if self._stopping:
                            return
                        if message is not None and message.get("type") == "message":
                            log.debug("switch announced: %s", message.get("data"))
                            break
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self._redis_error("watch", exc)
                log.warning("model switch channel lost (%r); polling again in %.1fs", exc,
                            self.resubscribe_s)
                await self.check()
                await asyncio.sleep(self.resubscribe_s)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                if client is not self.redis:
                    with contextlib.suppress(Exception):
                        await client.aclose()

    def start(self, name: str = "model-switch-watcher") -> None:
        self._stopping = False
        self._task = asyncio.create_task(self.run(), name=name)

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, STOP_CHECK_S * 4)
            self._task = None
