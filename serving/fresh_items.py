"""The stream's item vectors in the served item matrix, within a second, without a reload.

The stream worker's item fold-in (stream/item_foldin.py) writes vectors for items the served
version does not know into `keys.item_vectors(v)` and bumps `keys.item_vectors_seq(v)`;
each written item takes the counter's value in `keys.item_vectors_updated(v)`. Every
`api_fresh_items_poll_s` this process GETs the counter of the version it serves (one small
command); when it moved, it reads the items written since the value it last merged and
their vectors, builds a copy of the served `LoadedModel` with those rows appended (or
replaced, for items merged before) and swaps it in with one reference assignment, the way a
version switch does: a request that took the previous object finishes on it.

Fresh rows come after the version's own rows (`LoadedModel.n_model_items`), beside the rows
serving/content_items.py maps from attributes (a stream vector replaces such a guess, and
that poller leaves the stream's items alone), so every row number a request or the catalogue
computed stays valid; `LoadedModel.stream_items` names the stream's. They are scored by
personalised lists, anonymous sessions and /similar like any row, and the response flags
them (`fresh: true`).
They are candidates, not inputs: a session's fold-in reads the version's items only, as the
stream's user fold-in does. A new version starts with none; the API then merges whatever
the stream wrote under it (its re-fold of the items the version lacks, then new ones).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from redis.exceptions import RedisError

from recsys.candidates import KIND_ITEM_ITEM, KIND_POPULARITY
from recsys.content import stacked_items
from recsys.errors import ModelIntegrityError
from recsys.keys import Keys
from recsys.modelstore import unpack_vector
from recsys.neighbours import item_norms
from serving.served_model import LoadedModel

if TYPE_CHECKING:
    from serving.served_model import ServedModel
    from serving.telemetry import ApiMetrics

log = logging.getLogger(__name__)


def with_fresh_items(loaded: LoadedModel, vectors: Mapping[str, np.ndarray]) -> LoadedModel:
    """A copy of `loaded` whose item matrix also holds these stream vectors: new items are
    appended after the rows it has, rows it gained since publication (merged before, or
    mapped from attributes: the stream's evidence replaces that guess) are replaced; items
    the version itself knows are left alone (its factors win)."""
    base = loaded.n_model_items
    index = dict(loaded.index)
    ids = list(loaded.item_ids)
    rows: list[int] = []
    merged: list[str] = []
    for item in vectors:
        row = index.get(item)
        if row is None:
            row = index[item] = len(ids)
            ids.append(item)
        elif row < base:
            continue
        rows.append(row)
        merged.append(item)
    if not merged:
        return loaded
    grow = len(ids) - len(loaded.item_ids)
    k = loaded.factors
    factors = np.vstack([loaded.item_factors, np.zeros((grow, k), np.float32)])
    factors[rows] = np.asarray([vectors[item] for item in merged], dtype=np.float32)
    factors.setflags(write=False)
    embeddings = loaded.item_embeddings
    if embeddings is not None:  # no content for these rows: zero embeddings
        embeddings = np.vstack([embeddings, np.zeros((grow, embeddings.shape[1]), np.float32)])
        embeddings[rows] = 0.0
    version = dataclasses.replace(loaded.model, item_ids=ids, item_factors=factors,
                                  item_embeddings=embeddings)
    # Cached properties filled here: the index was just built, and YtY stays the version's
    # (sessions fold in against the version's items, as the stream does).
    version.__dict__["item_index"] = index
    version.__dict__["yty"] = loaded.model.yty
    rank = np.full(len(ids), len(loaded.popular_rows), dtype=np.int64)
    rank[:len(loaded.popular_rank)] = loaded.popular_rank
    hybrid = (stacked_items(factors, embeddings)
              if loaded.hybrid_items is not None and embeddings is not None else None)
    return dataclasses.replace(loaded, model=version, norms=item_norms(factors),
                               popular_rank=rank, hybrid_items=hybrid,
                               stream_items=loaded.stream_items | frozenset(merged), _memo={})


class FreshItemPoller:
    """Polls the served version's item-vector counter and merges what the stream wrote."""

    def __init__(self, holder: ServedModel, redis: Any, keys: Keys, poll_s: float,
                 metrics: ApiMetrics) -> None:
        self.holder = holder
        self.redis = redis
        self.keys = keys
        self.poll_s = poll_s
        self.metrics = metrics
        self._version: str | None = None
        self._seq = 0

    async def poll_once(self) -> int:
        """Merge the item vectors written since the last merge; returns how many."""
        loaded = self.holder.current
        if (loaded is None or loaded.factors == 0
                or loaded.kind in (KIND_ITEM_ITEM, KIND_POPULARITY)):
            return 0
        version = loaded.version
        if version != self._version:
            self._version, self._seq = version, 0
        raw_seq = await self.redis.get(self.keys.item_vectors_seq(version))
        seq = int(raw_seq) if raw_seq is not None else 0
        if seq <= self._seq:
            return 0
        items = await self.redis.zrangebyscore(self.keys.item_vectors_updated(version),
                                               f"({self._seq}", seq)
        raws = await self.redis.hmget(self.keys.item_vectors(version), items) if items else []
        vectors: dict[str, np.ndarray] = {}
        for item, raw in zip(items, raws, strict=True):
            if raw is None:
                continue  # removed since (an erased item)
            try:
                vector = unpack_vector(raw, loaded.factors)
            except ModelIntegrityError:
                continue
            if np.isfinite(vector).all():
                vectors[item.decode() if isinstance(item, bytes) else str(item)] = vector
        merged = (await asyncio.to_thread(with_fresh_items, loaded, vectors)
                  if vectors else loaded)
        if self.holder.current is not loaded:
            return 0  # a switch (or another merge) came first: start again from it
        self.holder.current = merged
        self._seq = seq
        if vectors:
            self.metrics.fresh_items.set(merged.n_fresh)
            self.metrics.fresh_item_merges.inc()
        return len(vectors)

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self.metrics.redis_errors.labels("fresh_items").inc()
                log.debug("fresh item poll failed: %r", exc)
            except Exception:  # noqa: BLE001 - the poller must outlive a bad value
                log.exception("fresh item poll failed")
            await asyncio.sleep(max(0.0, self.poll_s - (time.monotonic() - started)))
