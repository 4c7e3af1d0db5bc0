"""The content part of serving: the hybrid score and the new-item cold start.

Hybrid (recsys.content): a version published with a content model carries the items'
content embeddings E and the blend weights. A user's content profile is the normalised sum
of the embeddings of their most recent items (`api_content_recent` of the seen set the
personalised read already returns; the session's items for anonymous requests), and

    score(u, i) = [(1-w) x_u / (|x_u| m_y), w p_u] . [y_i, e_i]       (hybrid_items)

w = the version's `blend` for users with a vector; `session_blend` for anonymous sessions
and users the stream has not folded in yet (short histories, chosen on validation too).

New items: every API process polls the catalogue generation (`api_new_items_poll_s`); when
it moved, it reads the catalogue's change log (Keys.catalog_changes) and, for each changed
item the served version has no factors for, maps its attributes to factors with the
version's content map (y = f W, or the knn map) and its embedding e = normalise(f P). The
version in memory is extended with those rows (same version: user vectors stay valid, the
new rows live in the same factor space) and swapped in with one assignment, so the item can
appear in personalised lists and in /similar of related items, and its own /similar
answers by content. The rows exist only in memory until a refit learns them.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import numpy as np
import redis.asyncio as aioredis

from recsys.content import ContentError, hybrid_user_vectors, stacked_items
from recsys.content_catalogue import attributes_from_hash, has_features
from recsys.item_attributes import ItemAttributes
from recsys.keys import Keys
from recsys.neighbours import item_norms
from recsys.settings import Settings
from serving.catalog import Catalog
from serving.periodic import PeriodicTask
from serving.served_model import LoadedModel, ServedModel
from serving.telemetry import ApiMetrics

log = logging.getLogger(__name__)

READ_BATCH = 500
# changes read again behind the cursor: writes whose time stamp lags (clock skew between
# API processes) are still seen
CURSOR_LAG_MS = 5_000


def content_profile(model: LoadedModel, rows: np.ndarray) -> np.ndarray | None:
    """p_u from the rows of the user's recent items (most recent first); None when the
    version has no embeddings or none of the rows has features."""
    if model.item_embeddings is None or not len(rows):
        return None
    summed = model.item_embeddings[np.asarray(rows, dtype=np.intp)].sum(axis=0)
    norm = float(np.linalg.norm(summed))
    return (summed / norm).astype(np.float32) if norm > 0 else None


def hybrid_vector(model: LoadedModel, vector: np.ndarray, profile: np.ndarray,
                  blend: float) -> np.ndarray:
    """The user side of the hybrid dot product with `model.hybrid_items`."""
    assert model.content is not None
    return hybrid_user_vectors(vector[None, :], profile[None, :], blend,
                               model.content.factor_scale)[0]


def extend_with_items(model: LoadedModel, items: list[ItemAttributes]) -> LoadedModel:
    """The served version with rows for `items` (new ones appended; ones added before
    replaced), factors from the content map and embeddings from their features."""
    content = model.content
    if content is None or model.item_embeddings is None or not items:
        return model
    items = list({item.item_id: item for item in items}.values())  # the last write wins
    base = model.n_model_items
    mapped = content.map_factors(items, model.item_embeddings[:base],
                                 model.item_factors[:base])
    embeddings = content.embeddings(items)
    index = model.index
    ids = list(model.item_ids)
    rows = []
    for item in items:
        row = index.get(item.item_id)
        if row is None:
            row = len(ids)
            ids.append(item.item_id)
        rows.append(row)
    grow = len(ids) - len(model.item_ids)
    factors = np.vstack([model.item_factors,
                         np.zeros((grow, model.item_factors.shape[1]), np.float32)])
    emb = np.vstack([model.item_embeddings,
                     np.zeros((grow, model.item_embeddings.shape[1]), np.float32)])
    factors[rows], emb[rows] = mapped, embeddings
    factors.setflags(write=False)
    version = replace(model.model, item_ids=ids, item_factors=factors, item_embeddings=emb)
    version.__dict__["yty"] = model.model.yty  # fold-ins keep the version's own Gram matrix
    _ = version.item_index  # built here, off the request path
    n = len(ids)
    rank = np.full(n, len(model.popular_rows), dtype=np.int64)
    rank[:len(model.popular_rank)] = model.popular_rank
    return replace(model, model=version, norms=item_norms(factors), popular_rank=rank,
                   hybrid_items=stacked_items(factors, emb), _memo={})


class NewItems:
    """The poller that extends the served version with the catalogue's new items."""

    def __init__(self, settings: Settings, keys: Keys, redis: aioredis.Redis,
                 holder: ServedModel, catalog: Catalog, metrics: ApiMetrics) -> None:
        self.settings, self.keys, self.redis = settings, keys, redis
        self.holder, self.catalog, self.metrics = holder, catalog, metrics
        self._generation: bytes | None = None
        self._version: str | None = None
        self._cursor_ms = 0
        self._poller = PeriodicTask("new-items", settings.api_new_items_poll_s, self.refresh,
                                    metrics, "new_items")

    async def refresh(self) -> int:
        """Map the changed items the served version lacks; returns how many were added.
        Redis errors propagate."""
        loaded = self.holder.current
        if loaded is None or loaded.content is None or loaded.hybrid_items is None \
                or loaded.content.map_kind == "none":
            return 0
        generation = await self.redis.get(self.keys.catalog_generation)
        if generation == self._generation and loaded.version == self._version:
            return 0
        since = self._cursor_ms - CURSOR_LAG_MS if loaded.version == self._version else 0
        changed = await self.redis.zrangebyscore(self.keys.catalog_changes, max(since, 0),
                                                 "+inf", withscores=True)
        ids = [m.decode() if isinstance(m, bytes) else m for m, _ in changed]
        newest = max((int(score) for _, score in changed), default=self._cursor_ms)
        base = loaded.n_model_items
        # the stream's item fold-in (serving.fresh_items) learned these from interactions
        wanted = [i for i in ids if loaded.index.get(i, base) >= base
                  and i not in loaded.stream_items]
        items: list[ItemAttributes] = []
        for start in range(0, len(wanted), READ_BATCH):
            chunk = wanted[start:start + READ_BATCH]
            pipe = self.redis.pipeline(transaction=False)
            for item_id in chunk:
                pipe.hgetall(self.keys.item(item_id))
            for item_id, raw in zip(chunk, await pipe.execute(), strict=True):
                item = attributes_from_hash(item_id, raw)
                if has_features(item):
                    items.append(item)
        if items:
            try:
                extended = await asyncio.to_thread(extend_with_items, loaded, items)
            except ContentError as exc:
                log.warning("new items not mapped under %s: %s", loaded.version, exc)
                return 0
            if self.holder.current is not loaded:
                return 0  # a new version came in meanwhile: the next tick maps for it
            self.holder.current = extended
            self.catalog.rows_changed()
            log.info("mapped %d new item(s) from their attributes into version %s",
                     len(items), loaded.version)
        self._generation, self._version, self._cursor_ms = generation, loaded.version, newest
        return len(items)

    def start(self) -> None:
        self._poller.start()

    async def stop(self) -> None:
        await self._poller.stop()


def embeddings_cosine(model: LoadedModel, row: int, k: int, exclude: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Rows most similar to `row` in content (embedding cosine), best first."""
    assert model.item_embeddings is not None
    scores = model.item_embeddings @ model.item_embeddings[row]
    scores[row] = -np.inf
    if len(exclude):
        scores[exclude] = -np.inf
    k = min(k, len(scores))
    top = np.argpartition(-scores, k - 1)[:k] if k else np.zeros(0, np.intp)
    top = top[np.argsort(-scores[top], kind="stable")]
    top = top[np.isfinite(scores[top])]
    return top, scores[top]


def new_item_neighbours(model: LoadedModel, row: int, floor: float
                        ) -> list[tuple[str, float]]:
    """Cosine (factor space, as the stored lists) of `row` to the rows the version gained
    since publication (mapped from attributes, the stream's), those of `floor` or more:
    merged into a known item's stored /similar list, whose last score is the floor."""
    base = model.n_model_items
    if len(model.item_ids) <= base:
        return []
    norms = model.norms
    mine = model.item_factors[row]
    extra = model.item_factors[base:] @ mine
    denom = norms[base:] * max(float(norms[row]), 1e-12)
    cos = np.divide(extra, denom, out=np.zeros_like(extra), where=denom > 0)
    ids = model.item_ids
    return [(ids[base + j], float(cos[j])) for j in np.flatnonzero(cos >= floor).tolist()]


__all__ = ["NewItems", "content_profile", "embeddings_cosine", "extend_with_items",
           "hybrid_vector", "new_item_neighbours"]
