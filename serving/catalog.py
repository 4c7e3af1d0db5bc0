"""The item catalog: details for display; categories, filterable fields and availability
for filtering.

Redis holds the truth (recsys.catalog_codec: `keys.item`, `keys.catalog_category`,
`keys.catalog_facets`, `keys.catalog_unavailable`, `keys.catalog_generation`); each API
process keeps the category map, every item's filterable fields (`FacetIndex`) and the
unavailable set in memory, reloads them when the generation counter moves (another replica
or `recsys items load` wrote), and caches item details for `api_catalog_cache_s`. In-memory
updates are synchronous (no await between them), so a request never sees half of one.

Derived index arrays (rows of unavailable items, rows passing a filter) are memoised per
model version and catalog state, which keeps filtering on the hot path a single fancy-index
write and a candidate array.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from recsys.catalog_codec import (
    bump_generation,
    decode_facets,
    decode_item,
    display_fields,
    write_items_commands,
)
from recsys.erasure import remove_item_commands
from recsys.item_attributes import ItemAttributes, attribute_text
from recsys.item_filter import ALL_ATTRIBUTES, PATH_SEPARATOR, ItemFilter
from recsys.keys import Keys
from recsys.rules import (
    Columns,
    Rules,
    View,
    boost_column,
    column_key,
    columns_of,
    group_codes,
    group_keys,
    view_of,
)
from recsys.settings import Settings
from serving.heap import settle_after_load
from serving.periodic import PeriodicTask
from serving.redis_guard import RedisGuard
from serving.scoring import EMPTY_ROWS, rows_of
from serving.served_model import LoadedModel
from serving.telemetry import ApiMetrics

log = logging.getLogger(__name__)

SCAN_BATCH = 10_000
# Memory of the business rules' columns kept per model version (`RuleTable`: two arrays of
# the version's rows per distinct boost condition or max_per field asked); beyond it they are
# dropped and refilled from the cached views as pools ask.
MAX_RULE_COLUMN_BYTES = 64 << 20
# Model versions whose rule columns are kept (the served one and experiments' variants).
MAX_RULE_TABLES = 4
# Items read per Redis round trip when a rule set's columns are filled in the background.
RULE_FILL_BATCH = 64


def detail_members(item: ItemAttributes | None) -> bytes:
    """An item's display fields (recsys.catalog_codec.display_fields) as serialised JSON
    object members, `,"name":...,...` (b'' for an item not in the catalogue): ready to follow
    "item_id" and "score" in a response entry.

    Cached in this form, so that a response with k items costs k byte joins rather than k
    dict merges and a nested serialisation."""
    if item is None:
        return b""
    return b"," + orjson.dumps(display_fields(item))[1:-1]


class FacetIndex:
    """Every catalogue item's filterable fields, and inverted indexes over them: the sets a
    filter's clauses select (recsys.item_filter), without a pass over the catalogue."""

    def __init__(self, indexed_attributes: Iterable[str] = (ALL_ATTRIBUTES,)) -> None:
        names = frozenset(indexed_attributes)
        # None: every attribute (the setting api_filter_attributes is `*`)
        self.indexed: frozenset[str] | None = None if ALL_ATTRIBUTES in names else names
        self.facets: dict[str, ItemAttributes] = {}
        self.by_level: dict[str, set[str]] = {}   # any level of any path -> items
        self.by_prefix: dict[str, set[str]] = {}  # "a/b" path prefix -> items
        self.by_brand: dict[str, set[str]] = {}
        self.by_tag: dict[str, set[str]] = {}
        self.by_attribute: dict[tuple[str, str], set[str]] = {}
        self.prices: dict[str, float] = {}

    def _entries(self, item: ItemAttributes) -> Iterator[tuple[dict[Any, set[str]], Any]]:
        for path in item.category_paths:
            for depth in range(len(path)):
                yield self.by_level, path[depth]
                yield self.by_prefix, PATH_SEPARATOR.join(path[:depth + 1])
        if item.brand is not None:
            yield self.by_brand, item.brand
        for tag in item.tags:
            yield self.by_tag, tag
        for name, value in item.attributes.items():
            yield self.by_attribute, (name, attribute_text(value))

    def add(self, item: ItemAttributes) -> None:
        self.remove(item.item_id)
        if self.indexed is not None and item.attributes:
            # only the attributes filters may name: the others would cost memory per item
            item = dataclasses.replace(item, attributes={
                name: value for name, value in item.attributes.items()
                if name in self.indexed})
        self.facets[item.item_id] = item
        for index, key in self._entries(item):
            index.setdefault(key, set()).add(item.item_id)
        if item.price is not None:
            self.prices[item.item_id] = item.price

    def remove(self, item_id: str) -> None:
        old = self.facets.pop(item_id, None)
        if old is None:
            return
        for index, key in self._entries(old):
            members = index.get(key)
            if members is not None:
                members.discard(item_id)
                if not members:
                    del index[key]
        self.prices.pop(item_id, None)

    def matching(self, f: ItemFilter) -> set[str]:
        """The catalogue items that pass the filter's content clauses (availability is the
        caller's): `ItemFilter.matches` over the catalogue, from the indexes."""
        clauses: list[set[str]] = []
        if f.has_category:
            union: set[str] = set()
            for category in f.categories:
                union |= self.by_level.get(category, set())
            for path in f.category_paths:
                union |= self.by_prefix.get(PATH_SEPARATOR.join(path), set())
            clauses.append(union)
        if f.brands:
            clauses.append(set().union(*(self.by_brand.get(b, set()) for b in f.brands)))
        clauses.extend(self.by_tag.get(tag, set()) for tag in f.tags)
        clauses.extend(self.by_attribute.get(pair, set()) for pair in f.attributes)
        if clauses:
            clauses.sort(key=len)
            items = set(clauses[0]).intersection(*clauses[1:])
        else:
            items = set(self.facets)
        if f.price_min is not None or f.price_max is not None:
            low = f.price_min if f.price_min is not None else float("-inf")
            high = f.price_max if f.price_max is not None else float("inf")
            prices = self.prices
            pool = items if clauses else prices.keys()
            items = {i for i in pool if i in prices and low <= prices[i] <= high}
        return items


def _column_keys(rules: Rules) -> tuple[list[tuple[Any, ...]], list[Any]]:
    """The `RuleTable` keys and dtypes of `rules`' columns (recsys.rules.Columns order)."""
    keys: list[tuple[Any, ...]] = [("boost", *column_key(boost)) for boost in rules.boosts]
    dtypes: list[Any] = [np.float64 if boost.field == "new" else bool for boost in rules.boosts]
    if rules.max_per is not None:
        keys.append(("group", rules.max_per_field))
        dtypes.append(np.int32)
    return keys, dtypes


class RuleTable:
    """What business rules read of each row of one model version (recsys.rules columns: one
    per boost condition, the group codes of a max_per field): filled from the items' views as
    pools ask, and for every row in the background once a rule set is first asked
    (`Catalog.rule_columns`). A row's values stay until its item is written through this
    process (`forget`); a catalogue reload drops the table. The stream's fresh items append
    rows to a version (`grow`); rows never change their item within a version."""

    def __init__(self, version: str, rows: int, index: dict[str, int]) -> None:
        self.version = version
        self.rows = rows
        self.index = index  # item -> row, the latest of the version's (growing) models
        # key -> (values per row, whether the row's value is known)
        self.columns: dict[tuple[Any, ...], tuple[np.ndarray, np.ndarray]] = {}
        self.codes: dict[str, dict[Any, int]] = {}  # max_per field -> group -> code
        self.filling: set[tuple[Any, ...]] = set()  # rule sets' keys filled (or being filled)
        # Bumped by every `forget`: a view read before it may be stale, so what it gave is
        # used for that pool but not kept.
        self.writes = 0

    def grow(self, rows: int, index: dict[str, int]) -> None:
        self.index = index
        if rows <= self.rows:
            return
        extra = rows - self.rows
        self.columns = {key: (np.concatenate([values, np.zeros(extra, dtype=values.dtype)]),
                              np.concatenate([done, np.zeros(extra, dtype=bool)]))
                        for key, (values, done) in self.columns.items()}
        self.rows = rows

    def forget(self, item_id: str) -> None:
        """The item changed: its row is read again from its view when next asked."""
        row = self.index.get(item_id)
        if row is not None and row < self.rows:
            for _, done in self.columns.values():
                done[row] = False
        self.writes += 1

    def column(self, key: tuple[Any, ...], dtype: Any) -> tuple[np.ndarray, np.ndarray]:
        entry = self.columns.get(key)
        if entry is None:
            size = self.rows * (np.dtype(dtype).itemsize + 1)
            if self.nbytes() + size > MAX_RULE_COLUMN_BYTES:
                self.columns.clear()  # the group codes stay: equal keys keep equal codes
            entry = self.columns[key] = (np.zeros(self.rows, dtype=dtype),
                                         np.zeros(self.rows, dtype=bool))
        return entry

    def nbytes(self) -> int:
        return sum(values.nbytes + done.nbytes for values, done in self.columns.values())


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
        self.facets = FacetIndex(settings.api_filter_attributes)
        self.generation: int | None = None
        # Every name an item's `attributes` used (rules naming another one are refused).
        self.attribute_names: set[str] = set()
        # item -> what business rules match against (rule_items: recsys.rules.view_of of
        # its catalogue fields and added_ms). Valid until the catalogue changes: a write
        # through this process drops the item's entry, a write by another replica reloads.
        self._rule_items: dict[str, View] = {}
        self._rule_tables: dict[str, RuleTable] = {}  # model version -> its rule columns
        self._fill_tasks: set[asyncio.Task[None]] = set()
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

    def _memoised(self, model: LoadedModel, what: str, build: Any) -> Any:
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
        """Rows of the items whose category (primary leaf) is `category`."""
        return self._memoised(
            model, "c:" + category,
            lambda: np.sort(rows_of(model.index, self.by_category.get(category, ()))))

    def candidate_rows(self, model: LoadedModel, f: ItemFilter | None) -> np.ndarray | None:
        """Sorted rows of the model's items that pass the filter; None when it lets every
        available item through (then only `excluded_rows` apply)."""
        if f is None or (f.available and not f.restricts_content):
            return None
        return self._memoised(model, "f:" + f.key,
                              lambda: np.sort(rows_of(model.index, self.matching(f))))

    def excluded_rows(self, model: LoadedModel, f: ItemFilter | None) -> np.ndarray:
        """Rows no list may hold under the filter: the unavailable items (unless the filter
        asks for exactly those, `available=false`, when its candidates say which)."""
        if f is not None and not f.available:
            return EMPTY_ROWS
        return self.unavailable_rows(model)

    def matching(self, f: ItemFilter) -> set[str]:
        """Catalogue items that pass the filter, availability included."""
        items = self.facets.matching(f)
        if f.available:
            return items - self.unavailable if self.unavailable else items
        return items & self.unavailable

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

    def sorted_matching(self, f: ItemFilter) -> list[str]:
        """`matching`, sorted (the last source of a filtered fallback); memoised."""
        key = ("", self._seq, "sorted-f:" + f.key)
        ids: list[str] | None = self._memo.get(key)
        if ids is None:
            if len(self._memo) > 1024:
                self._memo.clear()
            ids = self._memo[key] = sorted(self.matching(f))
        return ids

    def is_allowed(self, item_id: str, f: ItemFilter | None = None) -> bool:
        """Whether a list under filter `f` may hold the item (`ItemFilter.matches`)."""
        unavailable = item_id in self.unavailable
        if f is None:
            return not unavailable
        if unavailable and item_id not in self.categories:
            return False  # removed from the catalogue
        return f.matches(self.facets.facets.get(item_id), not unavailable)

    def _apply_one(self, item: ItemAttributes) -> None:
        item_id = item.item_id
        old = self.categories.pop(item_id, None)
        if old is not None:
            members = self.by_category.get(old)
            if members is not None:
                members.discard(item_id)
                if not members:
                    del self.by_category[old]
        category = item.category or ""
        self.categories[item_id] = category
        if category:
            self.by_category.setdefault(category, set()).add(item_id)
        self.facets.add(item)
        if item.available:
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
        """Full reload of categories, facets and availability (start-up, or another writer)."""
        generation = await self.control.get(self.keys.catalog_generation)
        categories = await self._scan_hash(self.keys.catalog_category)
        raw_facets = await self._scan_hash(self.keys.catalog_facets)
        members = await self.control.smembers(self.keys.catalog_unavailable)
        unavailable = {m.decode() for m in members}
        names = await self.control.smembers(self.keys.catalog_attribute_names)
        self.attribute_names = {m.decode() for m in names}
        by_category: dict[str, set[str]] = {}
        facets = FacetIndex(self.settings.api_filter_attributes)
        for item, category in categories.items():
            if category:
                by_category.setdefault(category, set()).add(item)
            facets.add(decode_facets(item, raw_facets.get(item), category,
                                     item not in unavailable))
        self.categories, self.by_category, self.unavailable = categories, by_category, unavailable
        self.facets = facets
        self.generation = int(generation) if generation is not None else None
        self._details.clear()
        self._rule_items.clear()
        self._rule_tables.clear()
        self._changed()
        log.info("catalog loaded: %d items, %d unavailable (generation %s)",
                 len(categories), len(unavailable), self.generation)
        settle_after_load("catalogue")

    async def _scan_hash(self, key: str) -> dict[str, str]:
        out: dict[str, str] = {}
        cursor = 0
        while True:
            cursor, chunk = await self.control.hscan(key, cursor, count=SCAN_BATCH)
            out.update({k.decode(): v.decode() for k, v in chunk.items()})
            if not cursor:
                return out

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
        for task in list(self._fill_tasks):
            task.cancel()
        await asyncio.gather(*self._fill_tasks, return_exceptions=True)

    async def put(self, item: ItemAttributes) -> ItemAttributes:
        """Write one item (replacing it) and apply it locally. Redis errors propagate."""
        return (await self.put_many([item]))[0]

    async def put_many(self, items: list[ItemAttributes]) -> list[ItemAttributes]:
        """Write validated items (each replacing its previous version) in one MULTI/EXEC and
        apply them locally; a later entry for the same id wins, as with one PUT after
        another. Returns them as a read will give them back.

        The generation moves once per call, so other replicas reload the catalog once per
        batch, not once per item. All or nothing: Redis errors propagate.
        """
        pipe = self.redis.pipeline(transaction=True)
        write_items_commands(pipe, self.keys, items)
        bump_generation(pipe, self.keys)
        results = await pipe.execute()
        written = int(results[-1])
        # Synchronous from here on: a request sees the catalog before or after the batch.
        for item in items:
            self._apply_one(item)
            self._forget_rule_item(item.item_id)
            self.attribute_names.update(item.attributes)
        self._changed()
        if written == (self.generation or 0) + 1:
            self.generation = written
        # Otherwise another write (another replica's, or a concurrent request's) came in
        # between: the generation is left behind so that the watcher reloads the catalog once
        # on its next tick. Reloading here would make a concurrent catalog sync quadratic.
        return items

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
        self.facets.remove(item_id)
        self.unavailable.add(item_id)
        self._details.pop(item_id, None)
        self._forget_rule_item(item_id)
        self._changed()
        if written == (self.generation or 0) + 1:
            self.generation = written

    async def get(self, item_id: str) -> ItemAttributes | None:
        raw = await self.redis.hgetall(self.keys.item(item_id))
        return decode_item(item_id, raw) if raw else None

    async def get_many(self, item_ids: list[str]) -> list[ItemAttributes | None]:
        """Whole items (description included), in order; one round trip."""
        if not item_ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for item_id in item_ids:
            pipe.hgetall(self.keys.item(item_id))
        raws = await pipe.execute()
        return [decode_item(item_id, raw) if raw else None
                for item_id, raw in zip(item_ids, raws, strict=True)]

    async def display(self, item_ids: list[str]) -> list[dict[str, Any]]:
        """The display fields of each item (`detail_members`, cached), as dicts; {} for an
        item not in the catalogue."""
        return [orjson.loads(b"{" + more[1:] + b"}") if more else {}
                for more in await self.detail_members(item_ids)]

    async def exists(self, item_id: str) -> bool:
        return bool(await self.redis.exists(self.keys.item(item_id)))

    async def detail_members(self, item_ids: list[str]) -> list[bytes]:
        """`detail_members` of each item, in order (cached; b'' for items without details)."""
        now = time.monotonic()
        known, cache = self.categories, self._details
        # The common case first, one pass: every item cached and fresh. Only catalogue items
        # are cached, and removing or reloading drops them, so a hit needs no `known` check.
        hits = [cache.get(item_id) for item_id in item_ids]
        if all(hit is not None and hit[0] > now for hit in hits):
            return [hit[1] for hit in hits]  # type: ignore[index]
        out: list[bytes] = []
        missing: list[int] = []  # positions in `out` still to read from Redis
        for item_id, hit in zip(item_ids, hits, strict=True):
            if item_id in known:  # else: not in the catalog, nothing to show or to ask Redis
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
            item_id = item_ids[pos]
            members = detail_members(decode_item(item_id, raw) if raw else None)
            # Still in the catalogue after the await (a reload may have dropped it): only
            # catalogue items are cached, which the all-cached pass above relies on.
            if self.settings.api_catalog_cache_size and item_id in self.categories:
                cache[item_id] = (expires, members)
            out[pos] = members
        return out

    async def rule_columns(self, rules: Rules, item_ids: list[str], model: LoadedModel | None,
                           rows: np.ndarray | None) -> Columns:
        """recsys.rules.columns_of(rules, the items' views) for a pool: `rows` are its items'
        rows in `model` (-1: not in it). Read from the columns cached per row (`RuleTable`);
        views (`rule_items`) are asked only for the items some column does not know yet, or
        that have no row. None from Redis (it cannot say) is not cached. The first pool that
        finds rows missing starts filling the rule set's columns for every row."""
        if model is None or rows is None:
            return columns_of(rules, await self.rule_items(item_ids))
        table = self._rule_table(model)
        keys, dtypes = _column_keys(rules)
        entries = [table.column(key, dtype) for key, dtype in zip(keys, dtypes, strict=True)]
        known = rows >= 0
        safe = np.where(known, rows, 0)
        missing = ~known
        for _, done in entries:
            missing |= ~done[safe]
        out = [values[safe] for values, _ in entries]
        if missing.any():
            self._start_fill(table, model, rules)
            positions = np.flatnonzero(missing)
            wanted = [item_ids[pos] for pos in positions.tolist()]
            writes = table.writes
            views = await self.rule_items(wanted)
            fresh = self._fresh_columns(table, rules, views)
            for pool, column in zip(out, fresh, strict=True):
                pool[positions] = column
            self._settle(table, entries, fresh, wanted, views,
                         np.where(known[positions], rows[positions], -1), writes)
        return Columns(out[:len(rules.boosts)], out[-1] if rules.max_per is not None else None)

    def _rule_table(self, model: LoadedModel) -> RuleTable:
        table = self._rule_tables.get(model.version)
        if table is None:
            if len(self._rule_tables) >= MAX_RULE_TABLES:
                self._rule_tables.clear()
            table = self._rule_tables[model.version] = RuleTable(
                model.version, len(model.item_ids), model.index)
        else:
            table.grow(len(model.item_ids), model.index)
        return table

    def _forget_rule_item(self, item_id: str) -> None:
        self._rule_items.pop(item_id, None)
        for table in self._rule_tables.values():
            table.forget(item_id)

    def _fresh_columns(self, table: RuleTable, rules: Rules,
                       views: list[View | None]) -> list[np.ndarray]:
        fresh = [boost_column(boost, views) for boost in rules.boosts]
        if rules.max_per is not None:
            codes = table.codes.setdefault(rules.max_per_field, {})
            fresh.append(group_codes(group_keys(views, rules.max_per_field), codes))
        return fresh

    def _settle(self, table: RuleTable, entries: list[tuple[np.ndarray, np.ndarray]],
                fresh: list[np.ndarray], item_ids: list[str], views: list[View | None],
                rows: np.ndarray, writes: int) -> None:
        """Cache what the catalogue answered for the items at `rows` (-1: no row): a view,
        or "not in the catalogue"; nothing when an item was written since the views were
        asked for (`writes`: the table's count then)."""
        if table.writes != writes:
            return
        settled = np.asarray([view is not None or item_id not in self.categories
                              for item_id, view in zip(item_ids, views, strict=True)],
                             dtype=bool) & (rows >= 0)
        settled_rows = rows[settled]
        for (values, done), column in zip(entries, fresh, strict=True):
            values[settled_rows] = column[settled]
            done[settled_rows] = True

    def _start_fill(self, table: RuleTable, model: LoadedModel, rules: Rules) -> None:
        key = tuple(_column_keys(rules)[0])
        if key in table.filling or not self.guard.available:
            return
        table.filling.add(key)
        task = asyncio.create_task(self._fill_rule_columns(table, model, rules, key),
                                   name="rule-columns-fill")
        self._fill_tasks.add(task)
        task.add_done_callback(self._fill_tasks.discard)

    async def _fill_rule_columns(self, table: RuleTable, model: LoadedModel, rules: Rules,
                                 key: tuple[Any, ...]) -> None:
        """One pass over the rows `rules`' columns do not know yet, RULE_FILL_BATCH items per
        round trip on the control connection: without it, each request that meets rows
        nobody asked for yet reads their views itself, for as long as the catalogue has such
        rows (minutes at 50,000 items, again after every version or reload)."""
        keys, dtypes = _column_keys(rules)
        entries = [table.column(k, dtype) for k, dtype in zip(keys, dtypes, strict=True)]
        unknown = ~np.logical_and.reduce([done for _, done in entries])
        todo = np.flatnonzero(unknown[:len(model.item_ids)])
        started, filled = time.perf_counter(), 0
        try:
            for begin in range(0, len(todo), RULE_FILL_BATCH):
                if self._rule_tables.get(table.version) is not table:
                    return  # reloaded, or past MAX_RULE_TABLES: a new table fills itself
                rows = todo[begin:begin + RULE_FILL_BATCH]
                item_ids = [model.item_ids[row] for row in rows.tolist()]
                writes = table.writes
                views = await self._read_rule_views(item_ids, self.control)
                # A column dropped (memory bound) or grown meanwhile: write into the current.
                entries = [table.column(k, dtype) for k, dtype in zip(keys, dtypes, strict=True)]
                self._settle(table, entries, self._fresh_columns(table, rules, views),
                             item_ids, views, rows, writes)
                filled += len(rows)
        except (RedisError, OSError) as exc:
            self.guard.failed("catalog_rule_items", exc)
            table.filling.discard(key)  # a later pool starts again
            return
        log.debug("rule columns of %s filled: %d rows in %.2fs", table.version, filled,
                  time.perf_counter() - started)

    async def rule_items(self, item_ids: list[str]) -> list[View | None]:
        """Each item's catalogue fields as business rules match them (recsys.rules.view_of
        of the item's ItemAttributes plus `added_ms`); None for items not in the catalogue
        or when Redis cannot say. Cached until the catalogue changes (at most
        api_catalog_cache_size items)."""
        out: list[View | None] = []
        missing: list[int] = []
        cache = self._rule_items
        for item_id in item_ids:
            hit = cache.get(item_id)
            if hit is not None:
                out.append(hit)
                continue
            if item_id in self.categories:
                missing.append(len(out))
            out.append(None)
        if not missing or not self.guard.available:
            return out
        wanted = [item_ids[pos] for pos in missing]
        try:
            views = await self._read_rule_views(wanted, self.redis)
        except (RedisError, OSError) as exc:
            self.guard.failed("catalog_rule_items", exc)
            return out
        if len(cache) + len(missing) > self.settings.api_catalog_cache_size:
            cache.clear()
        for pos, view in zip(missing, views, strict=True):
            if view is None:
                continue  # deleted meanwhile: not cached, asked again
            if self.settings.api_catalog_cache_size:
                cache[item_ids[pos]] = view
            out[pos] = view
        return out

    async def _read_rule_views(self, item_ids: list[str],
                               client: aioredis.Redis) -> list[View | None]:
        """`rule_items`' views read from Redis, one round trip (None: not in Redis).

        The one place rules read items from: switch it here when the catalogue's shape
        changes."""
        pipe = client.pipeline(transaction=False)
        for item_id in item_ids:
            pipe.hgetall(self.keys.item(item_id))
        pipe.hmget(self.keys.catalog_added, item_ids)
        *raws, added = await pipe.execute()
        views: list[View | None] = []
        for item_id, raw, when in zip(item_ids, raws, added, strict=True):
            if not raw:
                views.append(None)
                continue
            item = decode_item(item_id, raw)
            views.append(view_of({
                "category": item.category, "category_paths": item.category_paths,
                "brand": item.brand, "tags": item.tags, "price": item.price,
                "attributes": dict(item.attributes),
                "added_ms": int(when) if when is not None else None}))
        return views
