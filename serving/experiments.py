"""The active experiment, as serving sees it: read from Redis, cached, applied per request.

At most one experiment is active at a time. Each API process keeps the active one in memory
and reloads it in the background every EXPERIMENT_REFRESH_S (a request never waits for
Redis for it); an admin write through this process applies at once, other processes follow
within that time. Assignment is recsys.experiments' sticky hash.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import orjson
import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import RedisError

from recsys.experiments import Experiment, Variant
from recsys.item_filter import ItemFilter
from recsys.keys import Keys
from serving.fallback import Result
from serving.recommender import Recommender

if TYPE_CHECKING:
    from serving.state import Services

log = logging.getLogger(__name__)

EXPERIMENT_REFRESH_S = 2.0
# The trending window a popularity variant serves.
POPULARITY_WINDOW = "24h"


class Experiments:
    def __init__(self, keys: Keys, control: aioredis.Redis) -> None:
        self.keys = keys
        self.control = control
        self.active: Experiment | None = None
        self._loaded_at = float("-inf")
        self._refreshing: asyncio.Task[None] | None = None

    # --- storage --------------------------------------------------------------------------
    async def all(self) -> list[Experiment]:
        raw = await self.control.hgetall(self.keys.experiments)
        out = []
        for name, value in raw.items():
            try:
                out.append(Experiment.model_validate_json(value))
            except ValidationError as exc:  # written by an older version, or by hand
                log.warning("experiment %r in Redis is unreadable: %s", name, exc)
        return sorted(out, key=lambda e: e.name)

    async def put(self, experiment: Experiment) -> None:
        await self.control.hset(self.keys.experiments, experiment.name,
                                orjson.dumps(experiment.model_dump()))
        await self.refresh()

    async def delete(self, name: str) -> bool:
        removed = bool(await self.control.hdel(self.keys.experiments, name))
        await self.control.delete(self.keys.experiment_counts(name))
        await self.refresh()
        return removed

    async def refresh(self) -> None:
        active = [e for e in await self.all() if e.active]
        self.active = active[0] if active else None
        self._loaded_at = time.monotonic()

    async def _refresh_quietly(self) -> None:
        try:
            await self.refresh()
        except (RedisError, OSError) as exc:
            self._loaded_at = time.monotonic()  # keep the last known one; retry later
            log.warning("cannot reload experiments (keeping the last known): %s", exc)

    # --- per request ----------------------------------------------------------------------
    def current(self) -> Experiment | None:
        """The active experiment (cached); schedules a reload when the cache is old."""
        if (time.monotonic() - self._loaded_at > EXPERIMENT_REFRESH_S
                and (self._refreshing is None or self._refreshing.done())):
            self._refreshing = asyncio.create_task(self._refresh_quietly(),
                                                   name="experiments-refresh")
        return self.active

    def assign(self, subject: str | None) -> tuple[Experiment, Variant] | None:
        experiment = self.current()
        if experiment is None or not subject:
            return None
        return experiment, experiment.assign(subject)

    async def stop(self) -> None:
        if self._refreshing is not None and not self._refreshing.done():
            self._refreshing.cancel()


async def serve(recommender: Recommender, assigned: tuple[Experiment, Variant] | None,
                k: int, filters: ItemFilter | None,
                personalised: Callable[[], Awaitable[Result]]) -> Result:
    """The list a variant serves: popularity variants get the trending list, the others
    the model's (`personalised()`)."""
    if assigned is not None and assigned[1].kind == "popularity":
        return await recommender.popular(k, POPULARITY_WINDOW, filters)
    return await personalised()


def labels(assigned: tuple[Experiment, Variant] | None) -> tuple[str | None, str | None]:
    """(variant, experiment) names for the response and the impression."""
    if assigned is None:
        return None, None
    return assigned[1].name, assigned[0].name


async def recommend(services: Services, endpoint: str, subject: str | None, k: int,
                    filters: ItemFilter | None,
                    personalised: Callable[[], Awaitable[Result]],
                    in_experiment: bool = True,
                    finish: Callable[[Result], Awaitable[Result]] | None = None
                    ) -> tuple[Result, dict[str, str | None]]:
    """Serve one list: the subject's variant decides what is served (when `in_experiment`),
    `finish` (business rules) turns it into the list shown, the impression of that list is
    queued, and the response's `recommendation_id` and `variant` are returned for
    `render`."""
    assigned = services.experiments.assign(subject) if in_experiment else None
    result = await serve(services.recommender, assigned, k, filters, personalised)
    if finish is not None:
        result = await finish(result)
    variant, experiment = labels(assigned)
    rid = services.impressions.record(services.producer, endpoint, result, subject, variant,
                                      experiment)
    return result, {"recommendation_id": rid, "variant": variant}
