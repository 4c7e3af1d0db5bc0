"""Item fold-in: vectors for items the served version does not know, from their first
interactions (docs/stream.md, "Item fold-in").

Per batch (`BatchProcessor._apply`, after the users' fold-in):

1. the batch's new events on items the version does not know give (item, user, confidence,
   time); the confidence is the user's on the item in their table value (recsys.confidence,
   the rule of the user fold-in); a burst on one item records only its most recent
   `stream_item_foldin_max_users` users of the batch (counted);
2. erased items (`keys.erasure_items`, one SMISMEMBER) are dropped (counted); then one
   pipeline of LUA_RECORD, one call per item: the pairs join the item's recent-user list in
   Redis (`keys.item_users` / `keys.item_confidences`), which every worker writes: it is the
   merged set of the item's users over all partitions, trimmed to the most recent
   `stream_item_foldin_max_users`. The call answers the merged list;
3. the users' vectors under the same version: this batch's users from the fold-in just
   solved (they are folded first), the others from the version's user-vector hash(es) in
   one HMGET per hash. Users without a vector there are skipped and counted: folding them
   in here would need their history, which only the worker owning their partition holds;
4. `recsys.foldin.fold_in_items` against XtX of the version's user factors
   (`keys.model_user_gram`, published with the version; computed once from its user-vector
   hash for a version published without it, looked for again every GRAM_RETRY_S while it
   has none), for at most `stream_item_foldin_max_items`
   items per batch (counted beyond);
5. the vectors join the batch's write plan (`WritePlan.item_vectors`), written with the
   users' vectors in one MULTI/EXEC under the same version.

A model switch starts the item vectors afresh: the new version's hash is empty and the
items it knows come from its factors. `refold` then solves, under it, the items of the
previous version's hash that it still lacks, from their recent-user lists (one worker does
it: the first to claim `keys.item_vectors_refold`).

Nothing here stops a batch: a Redis error or a bug leaves the batch's items without new
vectors (counted, logged); their next events fold them in again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from recsys.errors import ModelIntegrityError
from recsys.foldin import fold_in_items, item_fold_in_inputs
from recsys.keys import Keys
from recsys.modelstore import ModelVersion, pack_vector, unpack_gram, unpack_vector
from recsys.settings import Settings
from stream import telemetry
from stream.redis_writer import RedisRejected, RedisUnavailable, RedisWriter, WritePlan

log = logging.getLogger(__name__)

# KEYS = the item's recent users (zset user -> ms), their confidences (hash) (one slot in
# the cluster layout); ARGV = how many users to keep, TTL in ms (0 = none), then user,
# time ms, confidence triples. A confidence of 0 (net feedback cancelled out) removes the
# user, as the trainer's matrix has no entry for it. Returns {users, confidences} of the
# merged list (empty: {}).
LUA_RECORD = """
local keep = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
for i = 3, #ARGV, 3 do
  if tonumber(ARGV[i + 2]) == 0 then
    redis.call('ZREM', KEYS[1], ARGV[i])
    redis.call('HDEL', KEYS[2], ARGV[i])
  else
    redis.call('ZADD', KEYS[1], 'GT', ARGV[i + 1], ARGV[i])
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 2])
  end
end
local n = redis.call('ZCARD', KEYS[1])
if n > keep then
  local gone = redis.call('ZRANGE', KEYS[1], 0, n - keep - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - keep - 1)
  redis.call('HDEL', KEYS[2], unpack(gone))
end
if ttl > 0 and #ARGV > 2 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
local users = redis.call('ZRANGE', KEYS[1], 0, -1)
if #users == 0 then
  return {}
end
return {users, redis.call('HMGET', KEYS[2], unpack(users))}
"""

REFOLD_CLAIM_S = 3600
GRAM_SCAN_COUNT = 5000
# A version without a user Gram matrix nor user vectors yet is looked at again after this long.
GRAM_RETRY_S = 60.0


@dataclass(frozen=True, slots=True)
class Touch:
    """A user's interaction with an item the served version does not know."""

    item: str
    user: str
    confidence: float
    ts_ms: int


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class ItemFolder:
    def __init__(self, settings: Settings, writer: RedisWriter, worker_id: str) -> None:
        self.enabled = settings.stream_item_foldin
        self.max_users = settings.stream_item_foldin_max_users
        self.min_users = settings.stream_item_foldin_min_users
        self.max_items = settings.stream_item_foldin_max_items
        self.ttl_ms = int(settings.stream_item_users_ttl_days * 86_400_000)
        self.writer = writer
        self.keys: Keys = writer.keys
        self.worker_id = worker_id
        # version -> (XtX or None when it has none yet, when it was read)
        self._grams: dict[str, tuple[np.ndarray | None, float]] = {}

    def wants(self, model: ModelVersion) -> bool:
        """Whether batches under `model` fold items in (ALS versions, when enabled)."""
        return self.enabled and model.uses_factors and model.tower is None

    # --- per batch ---------------------------------------------------------------------
    async def plan(self, model: ModelVersion, touches: Sequence[Touch],
                   batch_vectors: Mapping[str, np.ndarray], plan: WritePlan) -> int:
        """Fold in the items of `touches` under `model` into `plan`; returns how many."""
        if not touches or not self.wants(model):
            return 0
        items = {t.item for t in touches}
        started = time.perf_counter()
        try:
            solved = await self._fold(model, self._bounded(touches), batch_vectors)
        except (RedisUnavailable, RedisRejected) as exc:
            telemetry.ITEM_FOLDIN_SKIPPED.labels("redis_error").inc(len(items))
            log.warning("item fold-in of %d items skipped this batch: %s", len(items), exc)
            return 0
        except Exception:  # noqa: BLE001 - the users' part of the batch must still be written
            telemetry.ITEM_FOLDIN_SKIPPED.labels("error").inc(len(items))
            log.exception("item fold-in of %d items failed this batch", len(items))
            return 0
        if solved:
            plan.item_vectors.setdefault(model.version, {}).update(solved)
            telemetry.ITEM_FOLDIN_ITEMS.inc(len(solved))
        telemetry.ITEM_FOLDIN_SECONDS.observe(time.perf_counter() - started)
        return len(solved)

    def _bounded(self, touches: Iterable[Touch]) -> dict[str, list[Touch]]:
        """Per item, its users of this batch, the most recent `max_users` of them."""
        by_item: dict[str, dict[str, Touch]] = defaultdict(dict)
        for touch in touches:
            by_item[touch.item][touch.user] = touch
        out: dict[str, list[Touch]] = {}
        for item, by_user in by_item.items():
            ordered = sorted(by_user.values(), key=lambda t: t.ts_ms, reverse=True)
            if len(ordered) > self.max_users:
                telemetry.ITEM_FOLDIN_USERS_BOUNDED.inc(len(ordered) - self.max_users)
                ordered = ordered[:self.max_users]
            out[item] = ordered
        return out

    async def _fold(self, model: ModelVersion, by_item: Mapping[str, Sequence[Touch]],
                    batch_vectors: Mapping[str, np.ndarray]) -> dict[str, bytes]:
        """Record the touches, read the merged lists and the users' vectors, solve."""
        xtx = await self._gram(model)
        merged = await self._record(by_item)
        if xtx is None:
            telemetry.ITEM_FOLDIN_SKIPPED.labels("no_user_gram").inc(len(merged))
            return {}
        order = sorted(merged, key=lambda item: -len(by_item.get(item, ())))
        if len(order) > self.max_items:
            telemetry.ITEM_FOLDIN_SKIPPED.labels("batch_bound").inc(len(order) - self.max_items)
            order = order[:self.max_items]
        wanted = {user for item in order for user, _ in merged[item]} - set(batch_vectors)
        vectors = dict(batch_vectors)
        vectors.update(await self._user_vectors(model, sorted(wanted)))
        inputs = item_fold_in_inputs(((item, merged[item]) for item in order), vectors,
                                     self.min_users)
        if inputs.users_without_vector:
            telemetry.ITEM_FOLDIN_USERS_SKIPPED.inc(inputs.users_without_vector)
        if inputs.too_few_users:
            telemetry.ITEM_FOLDIN_SKIPPED.labels("too_few_users").inc(len(inputs.too_few_users))
        if not inputs.items:
            return {}
        solved = fold_in_items(xtx, model.regularization, inputs.inputs)
        finite = np.isfinite(solved).all(axis=1)
        return {item: pack_vector(vector)
                for item, vector, ok in zip(inputs.items, solved, finite, strict=True) if ok}

    async def _record(self, by_item: Mapping[str, Sequence[Touch]]
                      ) -> dict[str, list[tuple[str, float]]]:
        """LUA_RECORD for each item in one pipeline: item -> its merged (user, confidence)
        list; erased items are left out (counted)."""
        if not by_item:
            return {}
        redis, keys = self.writer.redis, self.keys
        candidates = list(by_item)
        flags = await self.writer.call(
            "erased_items", lambda: redis.smismember(keys.erasure_items, candidates))
        items = [item for item, erased in zip(candidates, flags, strict=True) if not erased]
        if len(items) < len(candidates):
            telemetry.ITEM_FOLDIN_SKIPPED.labels("erased").inc(len(candidates) - len(items))
        if not items:
            return {}

        async def once() -> list[Any]:
            pipe = redis.pipeline(transaction=False)
            for item in items:
                args: list[Any] = [self.max_users, self.ttl_ms]
                for t in by_item[item]:
                    args += [t.user, t.ts_ms, repr(float(t.confidence))]
                pipe.eval(LUA_RECORD, 2, keys.item_users(item), keys.item_confidences(item),
                          *args)
            return await pipe.execute()

        replies = await self.writer.call("item_users", once)
        merged: dict[str, list[tuple[str, float]]] = {}
        for item, reply in zip(items, replies, strict=True):
            pairs: list[tuple[str, float]] = []
            if reply:
                users, confs = reply
                for user, conf in zip(users, confs, strict=True):
                    if conf is not None:
                        pairs.append((_text(user), float(conf)))
            merged[item] = pairs
        return merged

    async def _user_vectors(self, model: ModelVersion, users: list[str]
                            ) -> dict[str, np.ndarray]:
        if not users:
            return {}
        groups = self.keys.same_slot_groups(users)

        async def once() -> list[Any]:
            pipe = self.writer.redis.pipeline(transaction=False)
            for group in groups:
                pipe.hmget(self.keys.user_vector_hash(model.version, group[0]), group)
            return await pipe.execute()

        replies = await self.writer.call("item_foldin_users", once)
        out: dict[str, np.ndarray] = {}
        pairs = [(user, raw) for group, raws in zip(groups, replies, strict=True)
                 for user, raw in zip(group, raws, strict=True)]
        for user, raw in pairs:
            if raw is None:
                continue
            try:
                vector = unpack_vector(raw, model.factors)
            except ModelIntegrityError:
                continue
            if np.isfinite(vector).all():
                out[user] = vector
        return out

    async def _gram(self, model: ModelVersion) -> np.ndarray | None:
        """XtX of the version's user factors: published with the version; for a version
        published without it, computed once from its user-vector hash (logged)."""
        cached = self._grams.get(model.version)
        if cached is not None and (cached[0] is not None
                                   or time.monotonic() - cached[1] < GRAM_RETRY_S):
            return cached[0]
        redis = self.writer.redis
        raw = await self.writer.call(
            "user_gram", lambda: redis.get(self.keys.model_user_gram(model.version)))
        xtx = unpack_gram(raw, model.factors)
        if xtx is None:
            xtx = await self._gram_from_vectors(model)
        if len(self._grams) > 4:
            self._grams.clear()
        self._grams[model.version] = (xtx, time.monotonic())
        return xtx

    async def _gram_from_vectors(self, model: ModelVersion) -> np.ndarray | None:
        k = model.factors
        xtx = np.zeros((k, k), dtype=np.float64)
        n = 0
        chunk: list[np.ndarray] = []

        def add(rows: list[np.ndarray]) -> None:
            block = np.stack(rows).astype(np.float64)
            xtx[:] += block.T @ block

        for hash_key in self.keys.user_vector_hashes(model.version):
            async for _user, raw in self.writer.redis.hscan_iter(hash_key,
                                                                 count=GRAM_SCAN_COUNT):
                if len(raw) == k * 4:
                    chunk.append(np.frombuffer(raw, dtype="<f4"))
                    n += 1
                if len(chunk) >= GRAM_SCAN_COUNT:
                    add(chunk)
                    chunk = []
        if chunk:
            add(chunk)
        if n == 0 or not np.isfinite(xtx).all():
            log.warning("version %s has no user Gram matrix nor user vectors: no item fold-in "
                        "under it for now", model.version)
            return None
        log.warning("version %s was published without its user Gram matrix: computed from "
                    "%d user vectors", model.version, n)
        return xtx

    # --- model switches ----------------------------------------------------------------
    async def refold(self, previous: ModelVersion | None, model: ModelVersion,
                     lock: asyncio.Lock, current: Callable[[], bool]) -> int:
        """After a switch: solve under `model` the items of `previous`'s item fold-in that
        `model` still lacks (one worker claims it), a chunk at a time under `lock` (the
        batches' lock) while `current()` says `model` is still the one in use. Returns how
        many were written."""
        if previous is None or previous.version == model.version or not self.wants(model):
            return 0
        redis, keys = self.writer.redis, self.keys
        try:
            claimed = await self.writer.call("refold_claim", lambda: redis.set(
                keys.item_vectors_refold(model.version), self.worker_id, nx=True,
                ex=REFOLD_CLAIM_S))
            if not claimed:
                return 0
            fresh = await self.writer.call(
                "refold_items", lambda: redis.hkeys(keys.item_vectors(previous.version)))
        except (RedisUnavailable, RedisRejected) as exc:
            log.warning("re-fold of the previous version's items skipped: %s", exc)
            return 0
        lacking = sorted({_text(i) for i in fresh} - set(model.item_index))
        written = 0
        for start in range(0, len(lacking), self.max_items):
            chunk = {item: () for item in lacking[start:start + self.max_items]}
            plan = WritePlan()
            async with lock:
                if not current():
                    log.info("re-fold under %s stopped: a newer version is in use",
                             model.version)
                    break
                try:
                    solved = await self._fold(model, chunk, {})
                    if solved:
                        plan.item_vectors[model.version] = solved
                        await self.writer.write(plan)
                except (RedisUnavailable, RedisRejected) as exc:
                    log.warning("re-fold under %s stopped after %d items: %s", model.version,
                                written, exc)
                    break
            written += len(solved)
        telemetry.REFOLDED_ITEMS.inc(written)
        log.info("re-folded %d of %d items the new version %s lacks", written, len(lacking),
                 model.version)
        return written
