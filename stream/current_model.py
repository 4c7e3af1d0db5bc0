"""Which model version the worker folds in against, and its reaction to a switch.

recsys.model_watch learns of a switch (pub/sub + poll) and loads the version; here the
version is fully prepared (Gram matrix, item index) before it is handed to
`BatchProcessor.switch_to`, which swaps it in with one attribute assignment of an immutable
object (a batch that took `model = current.model` computes and writes with exactly that
version) and recomputes the users of the worker's table under it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError

from recsys.keys import Keys
from recsys.model_watch import LOAD_ERRORS, ModelSwitchWatcher
from recsys.modelstore import ModelVersion, aload_model
from stream import telemetry

log = logging.getLogger(__name__)

RESUBSCRIBE_BACKOFF_S = 1.0


class FoldInModel:
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


def model_watcher(redis: Any, keys: Keys, current: FoldInModel,
                  on_new_model: Callable[[ModelVersion], Awaitable[Any]],
                  poll_s: float, listener: Callable[[], Any] | None = None
                  ) -> ModelSwitchWatcher[ModelVersion]:
    """The worker's watcher: versions load through the worker's Redis client, and a read
    that fails half-way (Redis too) counts as a load error; the next check retries."""

    async def load(version: str) -> ModelVersion:
        model = await aload_model(redis, keys, version)
        return await asyncio.to_thread(_prepare, model)

    return ModelSwitchWatcher(
        redis, keys, poll_s=poll_s,
        in_use=lambda: current.current.version if current.current is not None else None,
        load=load, install=on_new_model,
        load_errors=(*LOAD_ERRORS, RedisError, OSError),
        resubscribe_s=RESUBSCRIBE_BACKOFF_S, listener=listener,
        on_load_error=lambda version, exc: telemetry.MODEL_LOAD_ERRORS.inc())
