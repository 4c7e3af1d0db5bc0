"""What to answer when the model cannot: the fallback chain of invariant 6.

In order, filling up to k items (each source only contributes what the earlier ones left):
1. `trending:{window}`: the stream's forward-decayed popularity zset (Redis);
2. `popular:alltime`: the served version's training popularity (in memory, so it still
   answers when Redis is down);
3. `category`: content-based, items in the categories of the user's (or session's) recently
   seen items (in memory; useful at cold start, before any model or trending data exists);
4. `catalogue`: with a filter only, the catalogue's items that pass it, by id, so that a
   filtered list is never shorter than k while k items pass.
Seen items, unavailable items and the request's filters (recsys.item_filter) are honoured
throughout; a filter reads trending deeper when its top holds too few passing items
(`filtered_trending`). The response's `source` is `fallback:<reason>`; `fallback_sources`
lists the sources used.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from recsys.item_filter import ItemFilter
from recsys.keys import Keys
from recsys.settings import Settings
from serving.catalog import Catalog
from serving.redis_guard import RedisGuard
from serving.scoring import merge_ranked
from serving.served_model import LoadedModel, ServedModel
from serving.telemetry import ApiMetrics

log = logging.getLogger(__name__)

# Trending entries read per request beyond k, to survive filtering without a second trip.
TRENDING_MARGIN = 50
TRENDING_MAX_FETCH = 5_000
# A filter whose items are at most this many reads their trending scores directly (ZMSCORE);
# a broader one reads this deep into the trending zset.
TRENDING_DEEP_FETCH = 50_000
# How many recently seen items decide the categories of the content-based fallback.
RECENT_FOR_CATEGORIES = 20


@dataclass
class Result:
    """Items chosen for one response, before display details are attached."""

    items: list[tuple[str, float]]
    source: str
    model_version: str | None
    fallback_sources: list[str] = field(default_factory=list)
    # Items of `items` whose vectors the stream learned (serving.fresh_items): flagged fresh.
    fresh: list[str] = field(default_factory=list)
    # The items' rows in `model_version`'s item table, in `items` order, when that version
    # ranked them (None otherwise): the rules' re-rank reads its columns by row without a
    # lookup per item. Whoever changes `items` sets it to None.
    rows: np.ndarray | None = None


@dataclass
class Fallback:
    settings: Settings
    keys: Keys
    redis: aioredis.Redis
    holder: ServedModel
    catalog: Catalog
    guard: RedisGuard
    metrics: ApiMetrics

    async def seen(self, user_id: str) -> list[str] | None:
        """The user's seen items, most recent first (None when Redis cannot say)."""
        if not self.guard.available:
            return None
        try:
            raw = await self.redis.zrevrange(self.keys.seen(user_id), 0,
                                             self.settings.api_seen_max - 1)
        except (RedisError, OSError) as exc:
            self.guard.failed("seen", exc)
            return None
        return [m.decode() for m in raw]

    async def trending(self, window: str, count: int) -> list[tuple[str, float]] | None:
        """Top of a trending zset (None when Redis cannot say)."""
        if not self.guard.available:
            return None
        try:
            raw = await self.redis.zrevrange(self.keys.popularity(window), 0, count - 1,
                                             withscores=True)
        except (RedisError, OSError) as exc:
            self.guard.failed("trending", exc)
            return None
        self.guard.succeeded()
        return [(m.decode(), float(s)) for m, s in raw]

    def trending_fetch(self, k: int, n_excluded: int) -> int:
        return min(TRENDING_MAX_FETCH,
                   k + n_excluded + min(len(self.catalog.unavailable), 1000) + TRENDING_MARGIN)

    async def filtered_trending(self, window: str, k: int, n_excluded: int,
                                filters: ItemFilter | None) -> list[tuple[str, float]] | None:
        """Trending entries, deep enough that k + n_excluded of them pass `filters` when
        that many passing items are trending: the top first, and when too few of it pass,
        the trending scores of the filter's own items (a small set), or a deeper slice."""
        count = self.trending_fetch(k, n_excluded)
        trending = await self.trending(window, count)
        if not trending or filters is None or not filters.restricts or len(trending) < count:
            return trending
        allowed = self.catalog.is_allowed
        if sum(1 for item, _ in trending if allowed(item, filters)) >= k + n_excluded:
            return trending
        matching = self.catalog.sorted_matching(filters)
        if len(matching) > TRENDING_MAX_FETCH:
            return await self.trending(window, TRENDING_DEEP_FETCH)
        if not matching:
            return []
        try:
            scores = await self.redis.zmscore(self.keys.popularity(window), matching)
        except (RedisError, OSError) as exc:
            self.guard.failed("trending", exc)
            return trending
        found = [(item, float(score)) for item, score in zip(matching, scores, strict=True)
                 if score is not None]
        found.sort(key=lambda pair: -pair[1])
        return found

    def alltime(self, model: LoadedModel | None, filters: ItemFilter | None
                ) -> Iterable[tuple[str, float]]:
        if model is None:
            return ()
        candidates = self.catalog.candidate_rows(model, filters)
        return model.popular() if candidates is None else model.popular(candidates)

    def by_categories(self, model: LoadedModel | None, recent: Sequence[str]
                      ) -> Iterator[tuple[str, float]]:
        """Items sharing a category with the recent items, most recent category first."""
        categories: list[str] = []
        for item in recent[:RECENT_FOR_CATEGORIES]:
            category = self.catalog.categories.get(item)
            if category and category not in categories:
                categories.append(category)
        for category in categories:
            if model is not None:
                rows = self.catalog.category_rows(model, category)
                ranked = rows[np.argsort(model.popular_rank[rows], kind="stable")]
                yield from ((model.item_ids[row], 0.0) for row in ranked)
            # Items without factors (new in the catalog) come after the modelled ones.
            yield from ((item, 0.0) for item in sorted(self.catalog.by_category.get(category, ())))

    async def answer(
        self,
        reason: str,
        k: int,
        *,
        user_id: str | None = None,
        seen: list[str] | None = None,
        exclude: Iterable[str] = (),
        recent: Sequence[str] = (),
        filters: ItemFilter | None = None,
        endpoint: str = "",
        source: str | None = None,
    ) -> Result:
        """The chain's answer; `source` names a version that *is* popularity (its answer is
        no fallback: not counted as one, and `source` is that name)."""
        model = self.holder.current
        if seen is None and user_id is not None:
            seen = await self.seen(user_id)
        excluded = set(seen or ())
        excluded.update(exclude)
        window = self.settings.api_fallback_window
        sources: list[tuple[str, Iterable[tuple[str, float]]]] = []
        trending = await self.filtered_trending(window, k, len(excluded), filters)
        if reason == "no_model" and not self.guard.available:
            reason = "redis_unavailable"  # the root cause: no model *because* no Redis
        if source is None:
            self.metrics.fallbacks.labels(reason).inc()
        if trending:
            sources.append((f"trending:{window}", trending))
        sources.append(("popular:alltime", self.alltime(model, filters)))
        sources.append(("category", self.by_categories(model, list(recent) or (seen or []))))
        catalog = self.catalog
        if filters is not None and filters.restricts:
            sources.append(("catalogue", ((item, 0.0)
                                          for item in catalog.sorted_matching(filters))))
        items, used = merge_ranked(sources, k, excluded,
                                   lambda item: catalog.is_allowed(item, filters))
        return Result([(item, score) for item, score, _ in items], source or f"fallback:{reason}",
                      model.version if model else None, used)
