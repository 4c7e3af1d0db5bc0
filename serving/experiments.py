"""The active experiment, as serving sees it: read from Redis, cached, applied per request.

At most one experiment is active at a time. Each API process keeps the active one in memory
and reloads it in the background every EXPERIMENT_REFRESH_S (a request never waits for
Redis for it); an admin write through this process applies at once, other processes follow
within that time. Assignment is recsys.experiments' sticky hash.

The versions the active experiment's variants serve (`Variant.version`) are loaded with the
served version's loader before the experiment takes effect in this process, and dropped when
no active experiment names them. A version that cannot be loaded (deleted by hand) is logged
and its variant answers like the control.
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

from recsys.errors import RecsysError
from recsys.experiments import Experiment, Variant
from recsys.item_filter import ItemFilter
from recsys.keys import Keys
from serving.fallback import Result
from serving.recommender import CONTROL, Recommender, Treatment
from serving.served_model import LoadedModel

if TYPE_CHECKING:
    from serving.state import Services

log = logging.getLogger(__name__)

EXPERIMENT_REFRESH_S = 2.0
# The trending window a popularity variant serves.
POPULARITY_WINDOW = "24h"


class Experiments:
    def __init__(self, keys: Keys, control: aioredis.Redis,
                 load: Callable[[str], Awaitable[LoadedModel]]) -> None:
        self.keys = keys
        self.control = control
        self.load = load
        self.active: Experiment | None = None
        self.models: dict[str, LoadedModel] = {}  # version -> its loaded serving state
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
        experiment = active[0] if active else None
        await self._load_versions(experiment)
        self.active = experiment
        self._loaded_at = time.monotonic()

    async def _load_versions(self, experiment: Experiment | None) -> None:
        wanted = {v.version for v in experiment.variants if v.version} if experiment else set()
        models = {v: m for v, m in self.models.items() if v in wanted}
        for version in sorted(wanted - models.keys()):
            try:
                models[version] = await self.load(version)
                log.info("experiment %s: loaded model version %s for its variant",
                         experiment.name if experiment else "", version)
            except (RecsysError, ValueError) as exc:
                log.warning("experiment variant's model version %s cannot be loaded (its "
                            "variant answers like the control): %s", version, exc)
        self.models = models

    def treatment(self, variant: Variant) -> Treatment:
        """How the variant's personalised answer differs from the control's."""
        if variant.version is not None:
            model = self.models.get(variant.version)
            return CONTROL if model is None else Treatment(model=model)
        if variant.blend is not None:
            return Treatment(blend=variant.blend)
        return CONTROL

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


async def serve(experiments: Experiments, recommender: Recommender,
                assigned: tuple[Experiment, Variant] | None, k: int,
                filters: ItemFilter | None,
                personalised: Callable[[Treatment], Awaitable[Result]]) -> Result:
    """The list a variant serves: popularity variants get the trending list, the others
    the model's, under the variant's treatment (`personalised(treatment)`)."""
    if assigned is None:
        return await personalised(CONTROL)
    if assigned[1].kind == "popularity":
        return await recommender.popular(k, POPULARITY_WINDOW, filters)
    return await personalised(experiments.treatment(assigned[1]))


def labels(assigned: tuple[Experiment, Variant] | None) -> tuple[str | None, str | None]:
    """(variant, experiment) names for the response and the impression."""
    if assigned is None:
        return None, None
    return assigned[1].name, assigned[0].name


async def recommend(services: Services, endpoint: str, subject: str | None, k: int,
                    filters: ItemFilter | None,
                    personalised: Callable[[Treatment], Awaitable[Result]],
                    in_experiment: bool = True) -> tuple[Result, dict[str, str | None]]:
    """Serve one list: the subject's variant decides what is served (when `in_experiment`),
    the impression is queued, and the response's `recommendation_id` and `variant` are
    returned for `render`."""
    assigned = services.experiments.assign(subject) if in_experiment else None
    result = await serve(services.experiments, services.recommender, assigned, k, filters,
                         personalised)
    variant, experiment = labels(assigned)
    rid = services.impressions.record(services.producer, endpoint, result, subject, variant,
                                      experiment)
    return result, {"recommendation_id": rid, "variant": variant}
