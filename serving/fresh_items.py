"""The stream's item vectors in the served item matrix, within a second, without a reload.

The stream worker's item fold-in (stream/item_foldin.py) writes vectors for items the served
version does not know into `keys.item_vectors(v)` and bumps `keys.item_vectors_seq(v)`;
each written item takes the counter's value in `keys.item_vectors_updated(v)`. Every
`api_fresh_items_poll_s` this process GETs the counter of the version it serves (one small
command); when it moved, it reads the items written since the value it last merged and
their vectors, builds a copy of the served `LoadedModel` with those rows appended (or
replaced, for items merged before) and swaps it in with one reference assignment, the way a
version switch does: a request that took the previous object finishes on it.

Fresh rows come after the version's own rows (`LoadedModel.fresh_from`), so every row number
a request or the catalogue computed stays valid. They are scored by personalised lists,
anonymous sessions and /similar like any row, and the response flags them (`fresh: true`).
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
from recsys.errors import ModelIntegrityError
from recsys.keys import Keys
from recsys.modelstore import ModelVersion, unpack_vector
from recsys.neighbours import item_norms
from serving.served_model import LoadedModel

if TYPE_CHECKING:
    from serving.served_model import ServedModel
    from serving.telemetry import ApiMetrics

log = logging.getLogger(__name__)


def with_fresh_items(loaded: LoadedModel, vectors: Mapping[str, np.ndarray]) -> LoadedModel:
    """A copy of `loaded` whose item matrix also holds these stream vectors: new items are
    appended after the version's rows, items merged before are replaced; items the version
    itself knows are left alone (its factors win)."""
    base_n = loaded.fresh_from if loaded.fresh_from is not None else len(loaded.item_ids)
    index = dict(loaded.index)
    ids = list(loaded.item_ids)
    replaced: dict[int, np.ndarray] = {}
    added: list[np.ndarray] = []
    for item, vector in vectors.items():
        row = index.get(item)
        if row is None:
            index[item] = len(ids)
            ids.append(item)
            added.append(vector)
        elif row >= base_n:
            replaced[row] = vector
    k = loaded.factors
    blocks = [loaded.item_factors]
    if added:
        blocks.append(np.asarray(added, dtype=np.float32).reshape(-1, k))
    factors = np.concatenate(blocks) if len(blocks) > 1 else np.array(loaded.item_factors)
    for row, vector in replaced.items():
        factors[row] = vector
    factors.setflags(write=False)
    base = loaded.model
    model = ModelVersion(version=base.version, item_ids=ids, item_factors=factors,
                         manifest=base.manifest, tower=base.tower)
    # Cached properties filled here: the index was just built, and YtY stays the version's
    # (sessions fold in against the version's items, as the stream does).
    model.__dict__["item_index"] = index
    model.__dict__["yty"] = base.yty
    norms = np.concatenate([loaded.norms[:base_n], item_norms(factors[base_n:])])
    rank = np.full(len(ids), len(loaded.popular_rows), dtype=np.int64)
    rank[:base_n] = loaded.popular_rank[:base_n]
    return dataclasses.replace(loaded, model=model, norms=norms, popular_rank=rank,
                               fresh_from=base_n, _memo={})


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
