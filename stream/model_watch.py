"""Which model version the worker folds in against, and how it learns of a new one.

The trainer moves the `current` pointer and then publishes the new id on the switch channel
(recsys.modelstore.activate_version). The watcher listens on that channel and, as a fallback
for a missed message (a reconnect, a worker that started in between), polls the pointer every
`stream_model_poll_s`. Either way the pointer is the truth: a message only triggers a check.

A new version is loaded and fully prepared (Gram matrix, item index) before it is handed to
`on_new_model`, which swaps it in with one attribute assignment of an immutable object: a
batch that took `model = holder.current` computes and writes with exactly that version.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError

from recsys.errors import ModelIntegrityError, ModelNotFound
from recsys.keys import Keys
from recsys.modelstore import ModelVersion, aload_model, aread_current_version
from stream import telemetry

log = logging.getLogger(__name__)

RESUBSCRIBE_BACKOFF_S = 1.0


class ModelHolder:
    """The model version in use; None until the first version is published."""

    def __init__(self) -> None:
        self.current: ModelVersion | None = None

    def swap(self, model: ModelVersion) -> ModelVersion | None:
        previous, self.current = self.current, model
        telemetry.MODEL.info({"version": model.version})
        telemetry.MODEL_SWITCHES.inc()
        return previous


def _prepare(model: ModelVersion) -> ModelVersion:
    # Warm the cached properties so the first batch after the swap pays nothing.
    _ = model.yty, model.item_index
    return model


class ModelWatcher:
    def __init__(self, redis: Any, keys: Keys, holder: ModelHolder,
                 on_new_model: Callable[[ModelVersion], Awaitable[None]],
                 poll_s: float) -> None:
        self.redis = redis
        self.keys = keys
        self.holder = holder
        self.on_new_model = on_new_model
        self.poll_s = poll_s
        self._lock = asyncio.Lock()

    async def check(self) -> bool:
        """Switch to the version the pointer names if it is not the one in use."""
        async with self._lock:
            try:
                version = await aread_current_version(self.redis, self.keys)
            except (RedisError, OSError) as exc:
                log.warning("cannot read the current model pointer: %r", exc)
                return False
            current = self.holder.current
            if version is None or (current is not None and current.version == version):
                return False
            try:
                model = await aload_model(self.redis, self.keys, version)
                model = await asyncio.to_thread(_prepare, model)
            except (ModelNotFound, ModelIntegrityError, RedisError, OSError, KeyError,
                    ValueError) as exc:
                telemetry.MODEL_LOAD_ERRORS.inc()
                log.error("cannot load model version %s (keeping %s): %r", version,
                          current.version if current else "none", exc)
                return False
            await self.on_new_model(model)
            return True

    async def run(self) -> None:
        await asyncio.gather(self._poll(), self._listen())

    async def _poll(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self.poll_s)

    async def _listen(self) -> None:
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.keys.model_switch_channel)
                # A switch may have happened while we were not subscribed.
                await self.check()
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        await self.check()
            except (RedisError, OSError) as exc:
                log.warning("model switch channel lost (%r); polling meanwhile", exc)
                await asyncio.sleep(RESUBSCRIBE_BACKOFF_S)
            finally:
                try:
                    await pubsub.aclose()
                except (RedisError, OSError):
                    pass
