"""Business rules in serving: stored placements, and the re-rank of a served list.

The rule logic is the core's (recsys.rules); this module reads its inputs (a deeper list
from the recommender, the pool's catalogue fields, the served version's factors, the user's
hidden items) and stores placements.

A placement is a named rule set (`PUT /v1/placements/{name}`), kept in Redis
(`keys.placements`). Each API process keeps them in memory and reloads them in the background
every PLACEMENT_REFRESH_S (a request never waits for Redis for them); a name this process
does not know yet is looked up in Redis once before a request is refused, so a placement
written through another replica works at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np
import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import RedisError

from recsys.eventtime import now_ms
from recsys.item_filter import ItemFilter
from recsys.keys import Keys
from recsys.rules import Columns, Rules, apply_columns, check_rules
from serving import ServingError
from serving.catalog import Catalog
from serving.fallback import Result
from serving.served_model import LoadedModel, ServedModel

log = logging.getLogger(__name__)

PLACEMENT_REFRESH_S = 2.0


class UnknownPlacement(ServingError):
    """`placement=NAME` names no stored placement (422)."""


class PlacementsUnavailable(ServingError):
    """Redis cannot say whether a placement this process does not know exists (503)."""


class Placements:
    def __init__(self, keys: Keys, control: aioredis.Redis) -> None:
        self.keys = keys
        self.control = control
        self.rules: dict[str, Rules] = {}
        self._loaded_at = float("-inf")
        self._refreshing: asyncio.Task[None] | None = None

    # --- storage --------------------------------------------------------------------------
    async def all(self) -> dict[str, Rules]:
        raw = await self.control.hgetall(self.keys.placements)
        out = {}
        for name, value in raw.items():
            try:
                out[name.decode()] = Rules.model_validate_json(value)
            except ValidationError as exc:  # written by hand, or by another version
                log.warning("placement %r in Redis is unreadable: %s", name, exc)
        return dict(sorted(out.items()))

    async def put(self, name: str, rules: Rules) -> None:
        await self.control.hset(self.keys.placements, name, rules.model_dump_json())
        self.rules[name] = rules

    async def delete(self, name: str) -> bool:
        removed = bool(await self.control.hdel(self.keys.placements, name))
        self.rules.pop(name, None)
        return removed

    async def count(self) -> int:
        return int(await self.control.hlen(self.keys.placements))

    async def refresh(self) -> None:
        self.rules = await self.all()
        self._loaded_at = time.monotonic()

    async def _refresh_quietly(self) -> None:
        try:
            await self.refresh()
        except (RedisError, OSError) as exc:
            self._loaded_at = time.monotonic()  # keep the last known ones; retry later
            log.warning("cannot reload placements (keeping the last known): %s", exc)

    # --- per request ----------------------------------------------------------------------
    async def get(self, name: str) -> Rules:
        """The placement's rules (cached); UnknownPlacement when Redis has none either,
        PlacementsUnavailable when Redis cannot be asked (a name is not refused unseen)."""
        if (time.monotonic() - self._loaded_at > PLACEMENT_REFRESH_S
                and (self._refreshing is None or self._refreshing.done())):
            self._refreshing = asyncio.create_task(self._refresh_quietly(),
                                                   name="placements-refresh")
        rules = self.rules.get(name)
        if rules is not None:
            return rules
        try:
            raw = await self.control.hget(self.keys.placements, name)
        except (RedisError, OSError) as exc:
            log.warning("cannot look placement %r up: %s", name, exc)
            raise PlacementsUnavailable("Redis is unavailable; retry") from exc
        if raw is not None:
            try:
                rules = self.rules[name] = Rules.model_validate_json(raw)
                return rules
            except ValidationError:
                pass
        raise UnknownPlacement(f"no placement named {name!r}")

    async def stop(self) -> None:
        if self._refreshing is not None and not self._refreshing.done():
            self._refreshing.cancel()


@dataclass(frozen=True)
class RuleRequest:
    """What one request asks of the rules: the merged rule set and the page it wants."""

    rules: Rules
    k: int
    offset: int
    placement: str | None

    @property
    def depth(self) -> int:
        return self.offset + self.k


async def resolve(placements: Placements, catalog: Catalog, placement: str | None,
                  request_rules: Rules | None, k: int, offset: int, max_weight: float,
                  param: str = "rules") -> RuleRequest | None:
    """The rules of one request: the placement's (raises UnknownPlacement) under the
    request's own (checked: raises RulesError naming the parameter). None when there are
    none, so the caller serves the plain list."""
    base = await placements.get(placement) if placement else None
    if request_rules is not None:
        check_rules(request_rules, max_weight=max_weight, max_position=k,
                    known_attributes=catalog.attribute_names, param=param)
        rules = request_rules.over(base)
    else:
        rules = base
    if rules is None or rules.empty:
        return None
    return RuleRequest(rules, k, offset, placement)


def pool_size(request: RuleRequest, factor: int) -> int:
    """How deep a list the rules re-rank: factor x (offset + k), and room for the pins."""
    return factor * request.depth + len(request.rules.pins)


async def rerank(request: RuleRequest, result: Result, catalog: Catalog,
                 model: LoadedModel | None, hidden: list[str] | None = None,
                 filters: ItemFilter | None = None) -> tuple[Result, list[bool]]:
    """`result` (a pool of candidates, best first) under the request's rules, cut to the
    requested page; and which of the page's items are pinned. A pin is placed only when the
    request's `filters` allow its item: filters choose the candidates, rules order them."""
    rules = request.rules
    ids = [item for item, _ in result.items]
    pinned = [pin.item_id for pin in rules.pins]
    needs_items = bool(rules.boosts) or rules.max_per is not None
    wants_vectors = bool(rules.diversity) and model is not None and model.factors > 0
    rows = None
    if model is not None and (needs_items or wants_vectors):
        if (result.rows is not None and result.model_version == model.version
                and len(result.rows) == len(ids)):
            rows = np.asarray(result.rows, dtype=np.intp)
        else:
            index = model.index
            rows = np.asarray([index.get(item, -1) for item in ids], dtype=np.intp)
    columns = (await catalog.rule_columns(rules, ids, model, rows) if needs_items
               else Columns([], None))
    vectors = None
    if wants_vectors:
        assert model is not None and rows is not None
        vectors = np.asarray(model.item_factors[rows], dtype=np.float64)
        vectors[rows < 0] = 0.0  # no factors: similar to nothing
    pinnable = None
    if pinned:
        hidden_set = set(hidden or ())
        known = model.index if model is not None else {}
        pinnable = {item: 0.0 for item in pinned
                    if item not in hidden_set and catalog.is_allowed(item, filters)
                    and (item in catalog.categories or item in known)}
    ranked = apply_columns(rules, ids, [score for _, score in result.items], columns, vectors,
                           now_ms(), request.depth, pinnable)
    page = slice(request.offset, request.depth)
    items = list(zip(ranked.ids[page], ranked.scores[page], strict=True))
    return (Result(items, result.source, result.model_version, result.fallback_sources),
            ranked.pinned[page])


class Reranker:
    """One request's rules as `serving.experiments.recommend`'s `finish` step: asks the
    recommender for `pool` items, re-ranks them, and keeps the pin flags for `render`."""

    def __init__(self, request: RuleRequest, catalog: Catalog, holder: ServedModel,
                 pool_factor: int,
                 hidden: Callable[[], Awaitable[list[str]]] | None = None,
                 filters: ItemFilter | None = None) -> None:
        self.request = request
        self.filters = filters
        self.catalog = catalog
        self.holder = holder
        self.pool = pool_size(request, pool_factor)
        self.hidden = hidden
        self.pinned: list[bool] = []

    async def __call__(self, result: Result) -> Result:
        model = self.holder.current
        if model is not None and model.version != result.model_version:
            model = None  # switched meanwhile: no factors of another version
        hidden = (await self.hidden() if self.hidden is not None and self.request.rules.pins
                  else None)
        result, self.pinned = await rerank(self.request, result, self.catalog, model, hidden,
                                           self.filters)
        return result

    def members(self) -> list[bytes]:
        """`,"pinned":true` for pinned items, b'' for the others."""
        return [b',"pinned":true' if flag else b"" for flag in self.pinned]
