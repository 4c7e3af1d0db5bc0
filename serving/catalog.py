"""The item catalog: details for display, categories and availability for filtering.

Redis holds the truth (`keys.item`, `keys.catalog_category`, `keys.catalog_unavailable`,
`keys.catalog_generation`); each API process keeps the category map and the unavailable set
in memory, reloads them when the generation counter moves (another replica wrote), and caches
item details for `api_catalog_cache_s`. In-memory updates are synchronous (no await between
them), so a request never sees half of one.

Derived index arrays (rows of unavailable items, rows of a category) are memoised per model
version and catalog state, which keeps exclusion on the hot path a single fancy-index write.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import numpy as np
import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from recsys.erasure import remove_item_commands
from recsys.keys import CATALOG_CHANGES_MAX, Keys
from recsys.settings import Settings
from serving.periodic import PeriodicTask
from serving.redis_guard import RedisGuard
from serving.scoring import rows_of
from serving.served_model import LoadedModel
from serving.telemetry import ApiMetrics

log = logging.getLogger(__name__)

SCAN_BATCH = 10_000


def encode_item(item: dict[str, Any]) -> dict[str, str]:
    """Catalog fields -> Redis hash fields (text)."""
    out = {"available": "1" if item.get("available", True) else "0",
           "attributes": orjson.dumps(item.get("attributes") or {}).decode()}
    for name in ("name", "image_url", "category"):
        if item.get(name) is not None:
            out[name] = str(item[name])
    if item.get("price") is not None:
        out["price"] = repr(float(item["price"]))
    return out


def decode_item(raw: dict[Any, Any]) -> dict[str, Any]:
    """Redis hash -> catalog fields; tolerant of hand-written hashes (bad numbers are dropped)."""
    text = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in raw.items()}
    item: dict[str, Any] = {name: text[name] for name in ("name", "image_url", "category")
                            if text.get(name) not in (None, "")}
    if text.get("price") not in (None, ""):
        with contextlib.suppress(ValueError):
            item["price"] = float(text["price"])
    item["available"] = text.get("available", "1") not in ("0", "false", "False")
    attributes: Any = {}
    if text.get("attributes"):
        with contextlib.suppress(orjson.JSONDecodeError):
            attributes = orjson.loads(text["attributes"])
    item["attributes"] = attributes if isinstance(attributes, dict) else {}
    return item


def detail_members(item: dict[str, Any] | None) -> bytes:
    """An item's display fields as serialised JSON object members, `,"name":...,...` (b''
    when there are none): ready to follow "item_id" and "score" in a response entry.

    Cached in this form, so that a response with k items costs k byte joins rather than k
    dict merges and a nested serialisation."""
    if not item:
        return b""
    return b"," + orjson.dumps(item)[1:-1]


class Catalog:
    def __init__(self, settings: Settings, keys: Keys, redis: aioredis.Redis,
                 metrics: ApiMetrics, guard: RedisGuard,
                 control: aioredis.Redis | None = None) -> None:
        self.settings = settings
        self.keys = keys
        self.redis = redis  # request path
        self.control = control or redis  # background reloads: never starved by requests
        self.metrics = metrics
        self.guard = guard
        # Every catalog item -> its category ('' when it has none): membership tells, without
        # a Redis trip, whether an item has details at all.
        self.categories: dict[str, str] = {}
        self.by_category: dict[str, set[str]] = {}
        self.unavailable: set[str] = set()
        self.generation: int | None = None
        self._seq = 0  # bumped on every in-memory change; keys the memo
        self._memo: dict[tuple[Any, ...], Any] = {}
        # item -> (expires, detail_members(item)); b'' caches "not in Redis" too.
        self._details: dict[str, tuple[float, bytes]] = {}
        self._poller = PeriodicTask("catalog-refresh", settings.api_catalog_poll_s,
                                    self.refresh_if_changed, metrics, "catalog_refresh")

    # --- in-memory state -----------------------------------------------------------------
    def _changed(self) -> None:
        self._seq += 1
        self._memo.clear()
        self.metrics.catalog_items_unavailable.set(len(self.unavailable))

    def rows_changed(self) -> None:
        """The served version's rows changed (new items mapped in): forget memoised rows."""
        self._changed()

    def _memoised(self, model: LoadedModel, what: str, build: Any) -> np.ndarray:
        # The row count too: the stream's fresh items (serving.fresh_items) add rows to a
        # version without changing its id.
        key = (model.version, len(model.item_ids), self._seq, what)
        rows = self._memo.get(key)
        if rows is None:
            if len(self._memo) > 1024:
                self._memo.clear()
            rows = self._memo[key] = build()
        return rows

    def unavailable_rows(self, model: LoadedModel) -> np.ndarray:
        return self._memoised(model, "", lambda: rows_of(model.index, self.unavailable))

    def category_rows(self, model: LoadedModel, category: str) -> np.ndarray:
        return self._memoised(
            model, "c:" + category,
            lambda: np.sort(rows_of(model.index, self.by_category.get(category, ()))))

    def sorted_ids(self, category: str | None = None) -> list[str]:
        """Catalogue item ids (of one category), sorted: stable pages for GET /v1/items.
        Memoised until the catalogue changes."""
        key = ("", self._seq, "sorted:" + (category or ""))
        ids: list[str] | None = self._memo.get(key)
        if ids is None:
            if len(self._memo) > 1024:
                self._memo.clear()
            members = self.categories if category is None else self.by_category.get(category, ())
            ids = self._memo[key] = sorted(members)
        return ids

    def is_allowed(self, item_id: str, category: str | None = None) -> bool:
        if item_id in self.unavailable:
            return False
        return category is None or self.categories.get(item_id) == category

    def _apply(self, item_id: str, item: dict[str, Any]) -> None:
        self._apply_one(item_id, item)
        self._changed()

    def _apply_one(self, item_id: str, item: dict[str, Any]) -> None:
        old = self.categories.pop(item_id, None)
        if old is not None:
            members = self.by_category.get(old)
            if members is not None:
                members.discard(item_id)
                if not members:
                    del self.by_category[old]
        category = item.get("category") or ""
        self.categories[item_id] = category
        if category:
            self.by_category.setdefault(category, set()).add(item_id)
        if item.get("available", True):
            self.unavailable.discard(item_id)
        else:
            self.unavailable.add(item_id)
        # Writes respect the cache bound like reads do (a bulk write of a large catalog
        # would otherwise grow it past api_catalog_cache_size).
        limit = self.settings.api_catalog_cache_size
        if not limit:
            self._details.pop(item_id, None)
            return
        if item_id not in self._details and len(self._details) >= limit:
            self._details.clear()
        self._details[item_id] = (time.monotonic() + self.settings.api_catalog_cache_s,
                                  detail_members(item))

    # --- Redis ---------------------------------------------------------------------------
    async def load(self) -> None:
        """Full reload of categories and availability (start-up, or another replica wrote)."""
        generation = await self.control.get(self.keys.catalog_generation)
        categories: dict[str, str] = {}
        cursor = 0
        while True:
            cursor, chunk = await self.control.hscan(self.keys.catalog_category, cursor,
                                                   count=SCAN_BATCH)
            categories.update({k.decode(): v.decode() for k, v in chunk.items()})
            if not cursor:
                break
        members = await self.control.smembers(self.keys.catalog_unavailable)
        unavailable = {m.decode() for m in members}
        by_category: dict[str, set[str]] = {}
        for item, category in categories.items():
            if category:
                by_category.setdefault(category, set()).add(item)
        self.categories, self.by_category, self.unavailable = categories, by_category, unavailable
        self.generation = int(generation) if generation is not None else None
        self._details.clear()
        self._changed()
        log.info("catalog loaded: %d items with a category, %d unavailable (generation %s)",
                 len(categories), len(unavailable), self.generation)

    async def refresh_if_changed(self) -> bool:
        raw = await self.control.get(self.keys.catalog_generation)
        generation = int(raw) if raw is not None else None
        if generation == self.generation:
            return False
        await self.load()
        return True

    def start(self) -> None:
        self._poller.start()

    async def stop(self) -> None:
        await self._poller.stop()

    async def put(self, item_id: str, item: dict[str, Any]) -> dict[str, Any]:
        """Write one item (replacing it) and apply it locally. Redis errors propagate."""
        return (await self.put_many([(item_id, item)]))[0]

    async def put_many(self, items: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        """Write items (each replacing its previous version) in one MULTI/EXEC and apply
        them locally; a later entry for the same id wins, as with one PUT after another.

        The generation moves once per call, so other replicas reload the catalog once per
        batch, not once per item. All or nothing: Redis errors propagate.
        """
        keys = self.keys
        pipe = self.redis.pipeline(transaction=True)
        stored = []
        for item_id, item in items:
            encoded = encode_item(item)
            pipe.delete(keys.item(item_id))
            pipe.hset(keys.item(item_id), mapping=encoded)
            pipe.hset(keys.catalog_category, item_id, item.get("category") or "")
            if item.get("available", True):
                pipe.srem(keys.catalog_unavailable, item_id)
            else:
                pipe.sadd(keys.catalog_unavailable, item_id)
            stored.append(decode_item(encoded))
        # what changed, for the replicas' new-item cold start (serving/content_items.py)
        now_ms = int(time.time() * 1000)
        pipe.zadd(keys.catalog_changes, {item_id: now_ms for item_id, _ in items})
        pipe.zremrangebyrank(keys.catalog_changes, 0, -CATALOG_CHANGES_MAX - 1)
        pipe.incr(keys.catalog_generation)
        results = await pipe.execute()
        written = int(results[-1])
        # Synchronous from here on: a request sees the catalog before or after the batch.
        for (item_id, _), item in zip(items, stored, strict=True):
            self._apply_one(item_id, item)
        self._changed()
        if written == (self.generation or 0) + 1:
            self.generation = written
        # Otherwise another write (another replica's, or a concurrent request's) came in
        # between: the generation is left behind so that the watcher reloads the catalog once
        # on its next tick. Reloading here would make a concurrent catalog sync quadratic.
        return stored

    async def remove(self, item_id: str, versions: list[str]) -> None:
        """Delete an item everywhere it can be recommended from (recsys.erasure): catalogue
        entry, trending and all-time popularity of `versions`; it stays in the unavailable
        set, so no model version recommends it. Redis errors propagate."""
        # One MULTI on one node; a cluster spreads these keys over slots, where each command
        # is idempotent and a failed removal is simply repeated.
        pipe = self.redis.pipeline(transaction=not self.keys.cluster)
        remove_item_commands(pipe, self.keys, item_id, versions)
        written = int((await pipe.execute())[-1])
        old = self.categories.pop(item_id, None)
        if old is not None and old in self.by_category:
            self.by_category[old].discard(item_id)
            if not self.by_category[old]:
                del self.by_category[old]
        self.unavailable.add(item_id)
        self._details.pop(item_id, None)
        self._changed()
        if written == (self.generation or 0) + 1:
            self.generation = written

    async def get(self, item_id: str) -> dict[str, Any] | None:
        raw = await self.redis.hgetall(self.keys.item(item_id))
        return decode_item(raw) if raw else None

    async def exists(self, item_id: str) -> bool:
        return bool(await self.redis.exists(self.keys.item(item_id)))

    async def detail_members(self, item_ids: list[str]) -> list[bytes]:
        """`detail_members` of each item, in order (cached; b'' for items without details)."""
        now = time.monotonic()
        out: list[bytes] = []
        missing: list[int] = []  # positions in `out` still to read from Redis
        known, cache = self.categories, self._details
        for item_id in item_ids:
            if item_id in known:  # else: not in the catalog, nothing to show or to ask Redis
                hit = cache.get(item_id)
                if hit is not None and hit[0] > now:
                    out.append(hit[1])
                    continue
                missing.append(len(out))
            out.append(b"")
        if not missing or not self.guard.available:
            return out
        try:
            pipe = self.redis.pipeline(transaction=False)
            for pos in missing:
                pipe.hgetall(self.keys.item(item_ids[pos]))
            raws = await pipe.execute()
        except (RedisError, OSError) as exc:
            self.guard.failed("catalog_details", exc)
            return out
        if len(cache) + len(missing) > self.settings.api_catalog_cache_size:
            cache.clear()
        expires = now + self.settings.api_catalog_cache_s
        for pos, raw in zip(missing, raws, strict=True):
            members = detail_members(decode_item(raw) if raw else None)
            if self.settings.api_catalog_cache_size:
                cache[item_ids[pos]] = (expires, members)
            out[pos] = members
        return out
