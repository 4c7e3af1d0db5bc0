"""The read paths: personalised, similar, popular and anonymous recommendations.

How a version scores depends on its `model_kind`: `als` versions score the user's vector
(folded in by the stream) against the item factors; `item_item` versions score the user's
most recent seen items (`api_seen_max`, the same Redis read) through the version's neighbour
matrix (recsys.candidates.neighbours.score_items, the trainer's own maths); a `popularity`
version answers from trending and its popularity list with `source = popularity`.

Each method takes `holder.current` once and uses only that version for the whole request
(invariant 2): the user vector is fetched from `keys.user_vector_hash(that version, user)`, so it
can only have been computed against the factors it is scored with. Anything that stops the
model from answering (no model, unknown user, Redis trouble, a model the trainer flagged as
worse than popularity) becomes a fallback with `source = fallback:<reason>` (invariant 6).

An experiment variant (serving/experiments.py) hands a `Treatment`: another loaded version,
whose users are folded in from their recent items per request (the stream keeps vectors only
under the served version), or another hybrid blend weight.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from redis.exceptions import RedisError

from recsys.candidates import KIND_ITEM_ITEM, KIND_POPULARITY
from recsys.candidates.neighbours import score_items as score_neighbours
from recsys.confidence import event_weight
from recsys.errors import ModelIntegrityError
from recsys.item_filter import ItemFilter
from recsys.modelstore import SIMILAR_FORMAT, unpack_similar, unpack_vector
from recsys.neighbours import cosine_neighbours
from recsys.repeat import fuse
from serving import ServingError
from serving.content_items import (
    content_profile,
    embeddings_cosine,
    hybrid_vector,
    new_item_neighbours,
)
from serving.fallback import Fallback, Result
from serving.score_batching import ScoringBatcher
from serving.scoring import (
    EMPTY_ROWS,
    ann_neighbours,
    ann_recommend,
    fold_in_session,
    join_rows,
    merge_ranked,
    recommend,
    rows_of,
    session_tower_vector,
    subset_neighbours,
    subset_recommend,
    top_of_scores,
    top_page,
)
from serving.served_model import LoadedModel

log = logging.getLogger(__name__)

# Everything a personalised request reads from Redis, in one EVALSHA: the user's vector under
# the served version (KEYS[1] = keys.user_vector_hash(version, user), field ARGV[1]) and their most
# recent seen items (KEYS[2] = keys.seen(user), ARGV[2] = how many), and the items their
# negative feedback hides (KEYS[3] = keys.hidden(user)). One command instead of a
# two-command pipeline halves redis-py's client-side cost (docs/benchmarks.md), which is
# most of what Redis costs the hot path. A missing vector comes back as nil (Lua false).
# In the cluster layout the three keys share the user's bucket tag: one slot, one node.
# Read-only; redis-py reloads the script by itself after a Redis restart (NOSCRIPT).
USER_STATE_LUA = """
return {redis.call('HGET', KEYS[1], ARGV[1]),
        redis.call('ZREVRANGE', KEYS[2], 0, tonumber(ARGV[2]) - 1),
        redis.call('SMEMBERS', KEYS[3])}
"""


class ItemNotFound(ServingError):
    """The item is neither in the served model nor in the catalog."""


@dataclass(frozen=True)
class Treatment:
    """What an experiment variant changes in a personalised answer: the version it is scored
    under (`model`; None: the served one) and the hybrid blend weight (`blend`; None: the
    version's trained one). The default changes nothing: the control."""

    model: LoadedModel | None = None
    blend: float | None = None


CONTROL = Treatment()


def _ranked(model: LoadedModel, rows: np.ndarray, scores: np.ndarray) -> list[tuple[str, float]]:
    ids = model.item_ids
    return [(ids[row], score) for row, score in zip(rows.tolist(), scores.tolist(), strict=True)]


def _stored_similar(model: LoadedModel, raw: bytes | None) -> list[tuple[str, float]]:
    """A stored similar list in the format the version's manifest names (packed rows, or the
    JSON of versions before it); an unreadable list counts as empty, not fatal."""
    if not raw:
        return []
    if model.model.manifest.get("similar_format") == SIMILAR_FORMAT:
        try:
            rows, scores = unpack_similar(raw, len(model.item_ids))
        except ModelIntegrityError:
            return []
        return _ranked(model, rows, scores)
    return _parse_similar(raw)


def _parse_similar(raw: bytes | None) -> list[tuple[str, float]]:
    """JSON [[item, score], ...]; malformed entries are skipped, not fatal."""
    if not raw:
        return []
    try:
        pairs = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return []
    out = []
    for pair in pairs if isinstance(pairs, list) else []:
        if (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[1], int | float)
                and isinstance(pair[0], str | int)):
            out.append((str(pair[0]), float(pair[1])))
    return out


def _model_result(model: LoadedModel, items: list[tuple[str, float]], source: str,
                  rows: np.ndarray | None = None) -> Result:
    return Result(items, source, model.version, fresh=model.fresh_among(i for i, _ in items),
                  rows=rows)


class Recommender:
    """Built on the fallback chain, whose clients and components it shares."""

    def __init__(self, fallback: Fallback) -> None:
        self.fallback = fallback
        self.settings, self.keys, self.redis = fallback.settings, fallback.keys, fallback.redis
        self.holder, self.catalog, self.guard = fallback.holder, fallback.catalog, fallback.guard
        self._user_state = self.redis.register_script(USER_STATE_LUA)  # no I/O until called
        self.batcher = ScoringBatcher(observe=fallback.metrics.scoring_batch_size.observe)

    # --- personalised ----------------------------------------------------------------------
    async def hidden(self, user_id: str) -> list[str]:
        """Items the user's negative feedback hides ([] when Redis cannot say)."""
        if not self.guard.available:
            return []
        try:
            return [m.decode() for m in await self.redis.smembers(self.keys.hidden(user_id))]
        except (RedisError, OSError) as exc:
            self.guard.failed("hidden", exc)
            return []

    async def _user_fallback(self, reason: str, user_id: str, k: int, exclude_seen: bool,
                             filters: ItemFilter | None, seen: list[str] | None = None,
                             offset: int = 0, hidden: list[str] | None = None) -> Result:
        if seen is None:
            seen = await self.fallback.seen(user_id) or []
            hidden = await self.hidden(user_id)
        result = await self.fallback.answer(reason, k + offset,
                                            seen=seen if exclude_seen else [],
                                            exclude=hidden or (),
                                            recent=seen, filters=filters)
        if offset:
            result.items = result.items[offset:]
            result.rows = None
        return result

    async def for_user(self, user_id: str, k: int, exclude_seen: bool = True,
                       filters: ItemFilter | None = None, offset: int = 0,
                       treatment: Treatment = CONTROL) -> Result:
        """Items offset .. offset + k - 1 of the user's ranking. The model's ranking is a
        total order (score, then row: `top_page`), so pages of one model version and user
        state never overlap nor skip an item."""
        model = self.holder.current
        if treatment.model is not None and (model is None
                                            or treatment.model.version != model.version):
            return await self._for_user_under(treatment.model, user_id, k, exclude_seen,
                                              filters, offset)
        if model is None:
            return await self._user_fallback("no_model", user_id, k, exclude_seen, filters,
                                             offset=offset)
        if model.kind == KIND_POPULARITY:
            seen = await self.fallback.seen(user_id) or []
            return await self.fallback.answer("popularity", k, seen=seen if exclude_seen else [],
                                              recent=seen, filters=filters,
                                              source=KIND_POPULARITY)
        if model.kind == KIND_ITEM_ITEM:
            return await self._item_item_for_user(model, user_id, k, exclude_seen, filters)
        if not model.beats_popularity:
            return await self._user_fallback("model_below_popularity", user_id, k,
                                             exclude_seen, filters, offset=offset)
        if not self.guard.available:
            return await self._user_fallback("redis_unavailable", user_id, k, exclude_seen,
                                             filters, seen=[], offset=offset)
        try:
            raw, seen_raw, hidden_raw = await self._user_state(
                keys=[self.keys.user_vector_hash(model.version, user_id), self.keys.seen(user_id),
                      self.keys.hidden(user_id)],
                args=[user_id, self.settings.api_seen_max])
        except (RedisError, OSError) as exc:
            self.guard.failed("user_vector", exc)
            return await self._user_fallback("redis_unavailable", user_id, k, exclude_seen,
                                             filters, seen=[], offset=offset)
        self.guard.succeeded()
        seen = [m.decode() for m in seen_raw]
        hidden = [m.decode() for m in hidden_raw]
        if raw is None and seen and model.hybrid_items is not None:
            # Not folded in yet under this version, but their items are known: a session
            # answer (the stream's fold-in maths, plus their items' content)
            known = rows_of(model.index, seen)
            if len(known):
                return self._session_result(
                    model, known, [model.event_weights.get("view", 1.0)] * len(known), k,
                    join_rows(self.catalog.excluded_rows(model, filters),
                              known if exclude_seen else EMPTY_ROWS,
                              rows_of(model.index, hidden) if hidden else EMPTY_ROWS),
                    filters, "personalized", offset, treatment.blend)
        if raw is None:
            # No vector under the served version: a stranger, or a user the stream has not
            # folded in against this version yet.
            reason = "no_user_vector" if seen else "unknown_user"
            return await self._user_fallback(reason, user_id, k, exclude_seen, filters, seen,
                                             offset, hidden)
        try:
            vector = unpack_vector(raw, model.factors)
        except ModelIntegrityError as exc:
            log.warning("user %s: unusable vector under %s: %s", user_id, model.version, exc)
            return await self._user_fallback("bad_user_vector", user_id, k, exclude_seen,
                                             filters, seen, offset, hidden)
        if not np.isfinite(vector).all():
            return await self._user_fallback("bad_user_vector", user_id, k, exclude_seen,
                                             filters, seen, offset, hidden)
        # Hidden (negative feedback) always goes, whatever exclude_seen says.
        hidden_rows = rows_of(model.index, hidden) if hidden else EMPTY_ROWS
        buy_again = (not exclude_seen and not offset and model.buy_again_weight > 0
                     and bool(seen))
        hybrid = self._hybrid(model, vector, seen, treatment.blend)
        # The index answers first pages; deeper pages need the exact ranking's total order.
        found = (self._from_index(model, vector, k, exclude_seen, seen, hidden_rows, filters)
                 if model.ann is not None and offset == 0 and not buy_again
                 and hybrid is None else None)
        if found is None:
            scores = (await self.batcher.scores(model.item_factors, vector) if hybrid is None
                      else await self.batcher.scores(model.hybrid_items, hybrid))
            # Exclusions from the catalog as it is after that await (no await from here on).
            seen_rows = (rows_of(model.index, seen) if (exclude_seen or buy_again) and seen
                         else EMPTY_ROWS)
            exclude = join_rows(self.catalog.excluded_rows(model, filters), seen_rows,
                                hidden_rows)
            candidates = self.catalog.candidate_rows(model, filters)
            found = top_page(scores, offset, k, exclude, candidates)
            if buy_again:
                found = self._buy_again(model, found[0], seen_rows, k, filters)
        rows, scores = found
        if not len(rows):
            return await self._user_fallback("no_candidates", user_id, k, exclude_seen,
                                             filters, seen, offset, hidden)
        return _model_result(model, _ranked(model, rows, scores),
                             "personalized" if hybrid is None else "hybrid", rows)

    def _hybrid(self, model: LoadedModel, vector: np.ndarray, recent: list[str],
                blend: float | None = None) -> np.ndarray | None:
        """The hybrid user vector when the version blends content in for this user (its
        weight for their history length, or `blend` when an experiment imposes one, > 0 and
        their recent items have content), else None: the plain collaborative score."""
        if model.hybrid_items is None or model.content is None or not recent:
            return None
        if blend is None:
            blend = model.content.blend_for(len(recent))
        if blend <= 0:
            return None
        profile = content_profile(
            model, rows_of(model.index, recent[:self.settings.api_content_recent]))
        return None if profile is None else hybrid_vector(model, vector, profile, blend)

    def _session_result(self, model: LoadedModel, rows: np.ndarray, weights: list[float],
                        k: int, exclude: np.ndarray, filters: ItemFilter | None, source: str,
                        offset: int = 0, blend: float | None = None) -> Result:
        """Top-k for a history without a stored vector (rows most recent first): folded in
        like the stream does, blended with content when the version says so."""
        vector = fold_in_session(model.item_factors, model.model.yty, model.regularization,
                                 model.alpha, rows, weights)
        recent = [model.item_ids[r] for r in dict.fromkeys(np.asarray(rows).tolist())]
        hybrid = self._hybrid(model, vector, recent, blend)
        candidates = self.catalog.candidate_rows(model, filters)
        if hybrid is None:
            best, scores = recommend(vector, model.item_factors, k + offset, exclude,
                                     candidates)
        else:
            best, scores = recommend(hybrid, model.hybrid_items, k + offset, exclude,
                                     candidates)
        return _model_result(model, _ranked(model, best[offset:], scores[offset:]),
                             source if hybrid is None else "hybrid", best[offset:])

    async def _for_user_under(self, model: LoadedModel, user_id: str, k: int,
                              exclude_seen: bool, filters: ItemFilter | None, offset: int
                              ) -> Result:
        """The user's list under a version that is not the served one: their recent items
        (the seen set, weighted as views, like a user the stream has not folded in yet)
        folded in against that version's factors, as an anonymous session is."""
        if model.kind == KIND_POPULARITY:
            seen = await self.fallback.seen(user_id) or []
            result = await self.fallback.answer("popularity", k,
                                                seen=seen if exclude_seen else [], recent=seen,
                                                filters=filters, source=KIND_POPULARITY)
            result.model_version = model.version
            return result
        if model.kind == KIND_ITEM_ITEM:
            return await self._item_item_for_user(model, user_id, k, exclude_seen, filters)
        seen = await self.fallback.seen(user_id)
        if seen is None:
            return await self._user_fallback("redis_unavailable", user_id, k, exclude_seen,
                                             filters, seen=[], offset=offset)
        hidden = await self.hidden(user_id)
        known = rows_of(model.index, seen) if seen else EMPTY_ROWS
        if not len(known):
            return await self._user_fallback("no_known_items" if seen else "unknown_user",
                                             user_id, k, exclude_seen, filters, seen, offset,
                                             hidden)
        exclude = join_rows(self.catalog.excluded_rows(model, filters),
                            known if exclude_seen else EMPTY_ROWS,
                            rows_of(model.index, hidden) if hidden else EMPTY_ROWS)
        tower = model.model.tower
        if tower is None:
            result = self._session_result(model, known,
                                          [model.event_weights.get("view", 1.0)] * len(known),
                                          k, exclude, filters, "personalized", offset)
        else:
            vector = session_tower_vector(tower, model.index, seen[::-1])
            best, scores = recommend(vector, model.item_factors, k + offset, exclude,
                                     self.catalog.candidate_rows(model, filters))
            result = Result(_ranked(model, best[offset:], scores[offset:]), "personalized",
                            model.version)
        if not result.items:
            return await self._user_fallback("no_candidates", user_id, k, exclude_seen,
                                             filters, seen, offset, hidden)
        return result

    def _buy_again(self, model: LoadedModel, rows: np.ndarray, own_rows: np.ndarray, k: int,
                   filters: ItemFilter | None) -> tuple[np.ndarray, np.ndarray]:
        """The model's list (the user's items excluded) fused with the user's own items, most
        recent first, by the version's fitted weight (recsys.repeat.fuse)."""
        unavailable = set(self.catalog.excluded_rows(model, filters).tolist())
        candidates = self.catalog.candidate_rows(model, filters)
        allowed = set(candidates.tolist()) if candidates is not None else None
        own = [r for r in own_rows.tolist() if r not in unavailable
               and (allowed is None or r in allowed)]
        fused = fuse(rows.tolist(), own, model.buy_again_weight, k)
        return (np.asarray([r for r, _ in fused], dtype=np.intp),
                np.asarray([v for _, v in fused], dtype=np.float32))

    async def _item_item_for_user(self, model: LoadedModel, user_id: str, k: int,
                                  exclude_seen: bool, filters: ItemFilter | None) -> Result:
        if not self.guard.available:
            return await self._user_fallback("redis_unavailable", user_id, k, exclude_seen,
                                             filters, seen=[])
        seen = await self.fallback.seen(user_id)
        if seen is None:
            return await self._user_fallback("redis_unavailable", user_id, k, exclude_seen,
                                             filters, seen=[])
        self.guard.succeeded()
        seen_rows = rows_of(model.index, seen) if seen else EMPTY_ROWS
        if not len(seen_rows):
            reason = "no_known_items" if seen else "unknown_user"
            return await self._user_fallback(reason, user_id, k, exclude_seen, filters, seen)
        return await self._item_item_answer(model, seen_rows, k, exclude_seen, filters,
                                            user_id, seen)

    async def _item_item_answer(self, model: LoadedModel, history: np.ndarray, k: int,
                                exclude_history: bool, filters: ItemFilter | None, user_id: str,
                                seen: list[str]) -> Result:
        scores = score_neighbours(history, model.neighbour_rows, model.neighbour_weights,
                                  model.neighbour_bias)
        buy_again = not exclude_history and model.buy_again_weight > 0
        exclude = join_rows(self.catalog.excluded_rows(model, filters),
                            history if exclude_history or buy_again else EMPTY_ROWS)
        candidates = self.catalog.candidate_rows(model, filters)
        rows, scores = top_of_scores(scores, k, exclude, candidates)
        if buy_again:
            rows, scores = self._buy_again(model, rows, history, k, filters)
        if not len(rows):
            return await self._user_fallback("no_candidates", user_id, k, exclude_history,
                                             filters, seen)
        return Result(_ranked(model, rows, scores), "personalized", model.version)

    def _from_index(self, model: LoadedModel, vector: np.ndarray, k: int, exclude_seen: bool,
                    seen: list[str], hidden_rows: np.ndarray, filters: ItemFilter | None
                    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Large catalogues: the index's candidates re-scored exactly, or only the filter's
        rows; None when too few candidates survive the exclusions (then: every item)."""
        assert model.ann is not None
        seen_rows = rows_of(model.index, seen) if exclude_seen and seen else EMPTY_ROWS
        exclude = join_rows(self.catalog.excluded_rows(model, filters), seen_rows, hidden_rows)
        candidates = self.catalog.candidate_rows(model, filters)
        if candidates is not None:
            return subset_recommend(vector, model.item_factors, k, exclude, candidates)
        return ann_recommend(model.ann, vector, model.item_factors, k, exclude,
                             self.settings.ann_candidates)

    # --- similar items ---------------------------------------------------------------------
    async def similar(self, item_id: str, k: int, filters: ItemFilter | None = None
                      ) -> Result:
        model = self.holder.current
        if model is not None and item_id in model.index:
            return await self._similar_in_model(model, item_id, k, filters)
        known = item_id in self.catalog.categories
        redis_down = not self.guard.available
        if not known and not redis_down:
            try:
                known = await self.catalog.exists(item_id)
            except (RedisError, OSError) as exc:
                self.guard.failed("item_exists", exc)
                redis_down = True
        if not known and not redis_down:
            raise ItemNotFound(f"item {item_id!r} is not in the model nor in the catalog")
        reason = ("redis_unavailable" if redis_down and not known
                  else "no_model" if model is None else "item_not_in_model")
        return await self.fallback.answer(reason, k, exclude=[item_id], recent=[item_id],
                                          filters=filters)

    async def _similar_in_model(self, model: LoadedModel, item_id: str, k: int,
                                filters: ItemFilter | None) -> Result:
        catalog = self.catalog

        def allowed(item: str) -> bool:
            return catalog.is_allowed(item, filters)

        row = model.index[item_id]
        if (row >= model.n_model_items and model.item_embeddings is not None
                and not model.is_fresh_row(row)):
            # an item mapped in from its attributes: similar by content (a filter's
            # non-candidates excluded, so a selective filter still fills k)
            exclude = catalog.excluded_rows(model, filters)
            candidates = catalog.candidate_rows(model, filters)
            if candidates is not None:
                outside = np.ones(len(model.item_ids), dtype=bool)
                outside[candidates] = False
                exclude = join_rows(exclude, np.flatnonzero(outside))
            rows, scores = embeddings_cosine(model, row, k + 1, exclude)
            items, _ = merge_ranked([("content", _ranked(model, rows, scores))], k,
                                    {item_id}, allowed)
            return Result([(item, score) for item, score, _ in items], "similar:content",
                          model.version)
        stored: list[tuple[str, float]] = []
        if self.guard.available:
            try:
                stored = _stored_similar(model, await self.redis.hget(
                    self.keys.model_similar(model.version), item_id))
            except (RedisError, OSError) as exc:
                self.guard.failed("similar", exc)
        if stored and len(model.item_ids) > model.n_model_items and model.factors > 0:
            # Items gained since the version was published (stream, attributes) compete on
            # the same cosine: those at or above the stored top-N's last score belong among
            # it; the ones below come in order from the factors' ranking.
            floor = min(score for _, score in stored)
            stored = sorted([*stored, *new_item_neighbours(model, row, floor)],
                            key=lambda pair: -pair[1])
        sources: list[tuple[str, Sequence[tuple[str, float]]]] = [("stored", stored)]
        items, _ = merge_ranked(sources, k, {item_id}, allowed)
        if len(items) < k and model.factors > 0:
            # The stored list is short (top-N), unreadable or filtered: the same version's
            # factors give the rest by cosine (among the filter's candidates only, so that
            # a selective filter still fills k).
            want = k + len(items)
            exclude = catalog.excluded_rows(model, filters)
            candidates = catalog.candidate_rows(model, filters)
            found = None
            if candidates is not None:
                found = subset_neighbours(row, model.item_factors, model.norms, want, exclude,
                                          candidates)
            elif model.ann is not None:
                found = ann_neighbours(model.ann, row, model.item_factors, model.norms, want,
                                       exclude, self.settings.ann_candidates)
            rows, scores = found if found is not None else cosine_neighbours(
                model.item_factors, want, row, norms=model.norms, exclude=exclude)
            sources.append(("factors", _ranked(model, rows, scores)))
            items, _ = merge_ranked(sources, k, {item_id}, allowed)
        return _model_result(model, [(item, score) for item, score, _ in items], "similar")

    # --- popular ---------------------------------------------------------------------------
    async def popular(self, k: int, window: str, filters: ItemFilter | None = None) -> Result:
        trending = await self.fallback.filtered_trending(window, k, 0, filters)
        model = self.holder.current
        if trending:
            catalog = self.catalog
            items, used = merge_ranked([(f"trending:{window}", trending)], k, set(),
                                       lambda item: catalog.is_allowed(item, filters))
            if items:
                return Result([(item, score) for item, score, _ in items], "popular",
                              model.version if model else None)
        reason = "redis_unavailable" if trending is None else "no_trending_data"
        return await self.fallback.answer(reason, k, filters=filters)

    # --- anonymous sessions ----------------------------------------------------------------
    async def anonymous(self, interactions: Sequence[Any], k: int,
                        filters: ItemFilter | None = None, treatment: Treatment = CONTROL
                        ) -> Result:
        ids = [i.item_id for i in interactions]
        recent = ids[::-1]
        model = treatment.model or self.holder.current
        if model is not None and model.kind == KIND_POPULARITY:
            return await self.fallback.answer("popularity", k, exclude=ids, recent=recent,
                                              filters=filters, source=KIND_POPULARITY)
        if model is not None and model.kind == KIND_ITEM_ITEM:
            history = np.unique(rows_of(model.index, ids))
            if not len(history):
                return await self.fallback.answer("no_known_items", k, exclude=ids,
                                                  recent=recent, filters=filters)
            scores = score_neighbours(history, model.neighbour_rows, model.neighbour_weights,
                                      model.neighbour_bias)
            exclude = join_rows(self.catalog.excluded_rows(model, filters), history)
            candidates = self.catalog.candidate_rows(model, filters)
            best, best_scores = top_of_scores(scores, k, exclude, candidates)
            if not len(best):
                return await self.fallback.answer("no_candidates", k, exclude=ids,
                                                  recent=recent, filters=filters)
            return Result(_ranked(model, best, best_scores), "anonymous", model.version)
        if model is None or not model.beats_popularity:
            reason = "no_model" if model is None else "model_below_popularity"
            return await self.fallback.answer(reason, k, exclude=ids, recent=recent,
                                              filters=filters)
        rows, weights = [], []
        for interaction in interactions:
            row = model.index.get(interaction.item_id)
            # The stream's fresh items are candidates, not inputs: a session is folded in
            # against the version's items, as the stream folds in its users.
            if row is not None and not model.is_fresh_row(row):
                rows.append(row)
                weights.append(event_weight(interaction.event_type, interaction.value,
                                            model.event_weights, model.negative_rating_max))
        if not rows:
            return await self.fallback.answer("no_known_items", k, exclude=ids, recent=recent,
                                              filters=filters)
        if model.hybrid_items is not None:
            exclude = join_rows(self.catalog.excluded_rows(model, filters), np.unique(rows))
            result = self._session_result(model, np.asarray(rows[::-1]), weights[::-1], k,
                                          exclude, filters, "anonymous",
                                          blend=treatment.blend)
            if result.items:
                return result
        tower = model.model.tower
        if tower is not None:
            vector = session_tower_vector(tower, model.index, ids)
        else:
            vector = fold_in_session(model.item_factors, model.model.yty, model.regularization,
                                     model.alpha, rows, weights)
        exclude = join_rows(self.catalog.excluded_rows(model, filters), rows_of(model.index, ids))
        candidates = self.catalog.candidate_rows(model, filters)
        best, scores = recommend(vector, model.item_factors, k, exclude, candidates)
        if not len(best):
            return await self.fallback.answer("no_candidates", k, exclude=ids, recent=recent,
                                              filters=filters)
        return _model_result(model, _ranked(model, best, scores), "anonymous", best)
