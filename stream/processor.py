"""One micro-batch end to end, and the recomputation after a model switch or a rebalance.

For a batch of records:

1. validate (`batching.coalesce`); invalid records go to the dead-letter topic with the reason;
2. fold each user's new events into their table value (`state.UserState`: history + dedupe,
   one value, one changelog record) and write the changed values back to the table in one
   go (`tables.UserHistoryTable.put_many`: their changelog records go out together);
3. fold in every user of the batch at once (`recsys.foldin.fold_in_batch`) against the model
   version read once at the start, so each vector is computed against exactly the version in
   its key (invariant 2). Versions without factors (`model_kind` item_item or popularity)
   get no vectors: serving scores them from the seen sets this step still writes;
   Then the items of the batch the version does not know are folded in against their
   recent users' vectors under the same version (stream.item_foldin);
4. write vectors, seen sets and popularity in one Redis MULTI/EXEC (stream.redis_writer):
   while Redis is unreachable the batch is kept and its write tried again (the health check
   reports the stall); when Redis refuses it (OOM, WRONGTYPE...), the batch is written user by
   user and the events of the users Redis refused go to the dead-letter topic with the reason.

Only then, and once the broker acknowledged the batch's changelog records
(`BatchResult.durable`), does the agent release the batch's offsets for commit. A crash
anywhere in between replays the batch: the table value already holds what was applied (dedupe
by offset and event id drops it), and every user of a replayed batch is folded in and written
again, so a vector lost between the table write and the Redis write is rewritten.

Batches and recomputation chunks run under one lock, so no stale recomputation can overwrite
a vector that a newer batch wrote.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from recsys.confidence import confidence, weight_of
from recsys.erasure import erased_user
from recsys.eventtime import EventClock, arrival_ms, now_ms
from recsys.foldin import fold_in_batch
from recsys.keys import POPULARITY_WINDOWS, Keys
from recsys.modelstore import ModelVersion, pack_vector
from recsys.settings import Settings
from recsys.userstate import Limits, StateDecodeError, UserState, fold_in_inputs, tower_inputs
from stream import telemetry
from stream.current_model import FoldInModel
from stream.decode import (
    PROCESSING_ERROR,
    Coalesced,
    Record,
    Rejected,
    coalesce,
    dead_letter_record,
)
from stream.health import Heartbeat
from stream.item_foldin import ItemFolder, Touch
from stream.redis_writer import RedisRejected, RedisUnavailable, RedisWriter, WritePlan
from stream.trending import TrendingEvent, by_partition

log = logging.getLogger(__name__)

RECOMPUTE_CHUNK = 500
RETRY_BACKOFF_S = 0.5

DeadLetter = Callable[[bytes | None, bytes], Awaitable[None]]


class HistoryTable(Protocol):
    """What the processor needs of the Faust table (a dict-backed fake in unit tests)."""

    def get_value(self, user: str) -> bytes | None: ...

    async def put_many(self, values: Sequence[tuple[str, bytes, int]]
                       ) -> asyncio.Future[None]: ...

    def users(self) -> list[str]: ...

    async def erase(self, user: str, partition: int) -> asyncio.Future[None]: ...


@dataclass(slots=True)
class BatchResult:
    outcomes: Counter[str]
    users: int
    vectors: int
    # Resolve when the batch's table changes are durable (changelog acknowledged); the
    # batch's offsets may be committed only after them.
    durable: list[asyncio.Future[None]] = field(default_factory=list)


class BatchProcessor:
    def __init__(self, settings: Settings, table: HistoryTable, writer: RedisWriter,
                 holder: FoldInModel, dead_letter: DeadLetter, worker_id: str,
                 owned_partitions: Callable[[], set[int] | None] = lambda: None,
                 heartbeat: Heartbeat | None = None) -> None:
        self.table = table
        self.writer = writer
        self.holder = holder
        self.dead_letter = dead_letter
        self.worker_id = worker_id
        self.owned_partitions = owned_partitions
        self.keys = Keys.for_settings(settings)
        self.topic = settings.interactions_topic
        self.weights = dict(settings.event_weights)
        self.negative_rating_max = settings.negative_rating_max
        self.limits = Limits(settings.stream_history_max_items, settings.stream_dedupe_ids)
        self.max_retries = settings.stream_batch_max_retries
        self.clock = EventClock.from_seconds(settings.event_time_future_tolerance_s)
        self.naive_utc = settings.event_time_naive_utc
        self.redact_dead_letters = settings.dead_letter_redact_payload
        self.idle_ms = int(settings.stream_user_idle_days * 86_400_000)
        self.recompute_window_ms = int(settings.stream_switch_active_days * 86_400_000)
        self.lock = asyncio.Lock()
        self.heartbeat = heartbeat or Heartbeat()
        self.item_folder = ItemFolder(settings, writer, worker_id)

    # --- batches -----------------------------------------------------------------------
    async def process(self, records: list[Record]) -> BatchResult:
        started = time.perf_counter()
        self.heartbeat.batch_started()
        done = 0
        try:
            result = await self._process(records, started)
            done = len(records)
            return result
        finally:
            self.heartbeat.batch_done(done)

    async def _process(self, records: list[Record], started: float) -> BatchResult:
        """Events in order around erase control records (recsys.erasure): the events before
        one are applied, then the user is forgotten, then the events after it."""
        erasures = [(n, user) for n, record in enumerate(records)
                    if (user := erased_user(record.value)) is not None]
        if not erasures:
            return await self._process_events(records, started)
        result = BatchResult(Counter(), 0, 0)
        start = 0
        for n, user in [*erasures, (len(records), None)]:
            if n > start:
                part = await self._process_events(records[start:n], started)
                result.outcomes.update(part.outcomes)
                result.users += part.users
                result.vectors += part.vectors
                result.durable.extend(part.durable)
            if user is not None:
                result.durable.append(await self._erase(user, records[n]))
                result.outcomes["erased"] += 1
            start = n + 1
        return result

    async def _erase(self, user: str, record: Record) -> asyncio.Future[None]:
        async with self.lock:
            done = await self.table.erase(user, record.partition)
            await self.writer.erase_user(user)
        telemetry.ERASED_USERS.inc()
        log.info("erased user %r (table tombstone, Redis state)", user)
        return done

    async def _process_events(self, records: list[Record], started: float) -> BatchResult:
        telemetry.BATCH_EVENTS.observe(len(records))
        # One counter update per partition, not per record (labels() is a locked dict lookup).
        for partition, n in Counter(record.partition for record in records).items():
            telemetry.PARTITION_EVENTS.labels(str(partition)).inc(n)
        batch = coalesce(records, self.naive_utc)
        if batch.misrouted:
            telemetry.MISROUTED.inc(batch.misrouted)
        for rejected in batch.rejected:
            await self._reject(rejected)
        result = BatchResult(Counter({"invalid": len(batch.rejected)}), len(batch.by_user), 0)
        if batch.by_user:
            telemetry.BATCH_USERS.observe(len(batch.by_user))
            result = await self._apply_with_retries(batch, result)
        telemetry.BATCH_SECONDS.observe(time.perf_counter() - started)
        return result

    async def _reject(self, rejected: Rejected) -> None:
        key, value = dead_letter_record(rejected, self.worker_id, self.redact_dead_letters)
        await self.dead_letter(key, value)
        telemetry.DEAD_LETTERS.labels(rejected.reason).inc()
        if rejected.reason != PROCESSING_ERROR and not rejected.reason.startswith("redis_"):
            telemetry.EVENTS.labels("unknown", "invalid").inc()

    async def _apply_with_retries(self, batch: Coalesced, result: BatchResult) -> BatchResult:
        for attempt in range(self.max_retries + 1):
            try:
                async with self.lock:
                    outcomes, vectors = await self._apply(batch, result.durable)
                result.outcomes.update(outcomes)
                result.vectors = vectors
                return result
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a bug must not stop the partition for good
                telemetry.BATCH_ERRORS.inc()
                log.exception("batch of %d events failed (attempt %d of %d)", batch.n_valid,
                              attempt + 1, self.max_retries + 1)
                if attempt < self.max_retries:
                    await asyncio.sleep(RETRY_BACKOFF_S * 2 ** attempt)
        log.error("giving up on a batch: %d events go to the dead-letter topic", batch.n_valid)
        for events in batch.by_user.values():
            for _event, record in events:
                await self._reject(Rejected(record, PROCESSING_ERROR, None,
                                            "the worker failed to process this event; see logs"))
        result.outcomes["processing_error"] += batch.n_valid
        return result

    def _load(self, user: str) -> UserState:
        try:
            return UserState.from_bytes(self.table.get_value(user))
        except StateDecodeError as exc:
            telemetry.STATE_RESETS.inc()
            log.error("table value of user %r is unreadable (%s); starting afresh", user, exc)
            return UserState()

    async def _apply(self, batch: Coalesced, durable: list[asyncio.Future[None]]
                     ) -> tuple[Counter[str], int]:
        model = self.holder.current  # one version for the whole batch
        item_index = model.item_index if model is not None else {}
        outcomes: Counter[tuple[str, str]] = Counter()
        plan = WritePlan()
        states: dict[str, UserState] = {}
        changed_values: list[tuple[str, bytes, int]] = []  # (user, table value, partition)
        applied: list[tuple[str, int, float]] = []  # (item, time ms, weight) of new events
        counted: list[TrendingEvent] = []  # new events and replays, for trending
        replayed: set[tuple[str, str]] = set()  # (user, event id) of replays in `counted`
        counted_from: list[tuple[str, Record]] = []  # (user, record) of each of `counted`
        clock_ms = now_ms()
        clamped: Counter[str] = Counter()
        touches: list[Touch] = []  # users' new events on items the version does not know
        fold_items = model is not None and self.item_folder.wants(model)

        user_outcomes: dict[str, Counter[tuple[str, str]]] = {}
        for user, events in batch.by_user.items():
            before = outcomes.copy()
            state = self._load(user)
            changed = False
            seen: dict[str, int] = {}
            was_negative: dict[str, bool] = {}
            unknown: set[str] = set()
            for event, record in events:
                weight = weight_of(event, self.weights, self.negative_rating_max)
                item = event.item_id
                # The producer's clock is not trusted: beyond the tolerance, the event counts
                # at its arrival, so it cannot move the trending landmark or a user's "last
                # event" into the future.
                ts, why = self.clock.clamp(event.timestamp,
                                           arrival_ms(record.timestamp_ms, clock_ms))
                # Seen is written for replays too: ZADD GT is idempotent, and it repairs a
                # write that a crash prevented.
                seen[item] = max(seen.get(item, 0), ts)
                if item not in was_negative:
                    prior = state.items.get(item)
                    was_negative[item] = prior is not None and prior[0] < 0
                replay = state.is_replay(record.partition, record.offset)
                if not state.apply(event.event_id, item, weight, ts, record.partition,
                                   record.offset, self.limits):
                    outcomes[(event.event_type, "duplicate")] += 1
                    # A replay by offset goes to trending again: the table write comes before
                    # the Redis write, so a crash in between leaves the event in the table and
                    # not in trending. Trending's own offset watermark drops it if it was
                    # counted (stream.trending). A re-sent id at a new offset is not a replay.
                    if replay and weight > 0 and (user, event.event_id) not in replayed:
                        replayed.add((user, event.event_id))
                        counted.append(TrendingEvent(record.partition, record.offset, item,
                                                     ts, weight))
                        counted_from.append((user, record))
                    continue
                changed = True
                state.touched_ms = clock_ms
                applied.append((item, ts, weight))
                if weight > 0:  # trending counts what people want: negative feedback adds nothing
                    counted.append(TrendingEvent(record.partition, record.offset, item, ts,
                                                 weight))
                    counted_from.append((user, record))
                if why is not None:
                    clamped[why] += 1  # once per event: replays were dropped just above
                if model is None:
                    outcomes[(event.event_type, "no_model")] += 1
                elif item not in item_index:
                    outcomes[(event.event_type, "unknown_item")] += 1
                    unknown.add(item)
                else:
                    outcomes[(event.event_type, "ok")] += 1
            if model is not None and state.version != model.version:
                state.version = model.version
                changed = True
            if changed:
                changed_values.append((user, state.to_bytes(), events[-1][1].partition))
            plan.seen[user] = seen
            # Hidden from the user's lists while the item's net feedback is negative; only
            # items negative now or before this batch are written (most users have none).
            flags = {}
            for item in seen:
                entry = state.items.get(item)
                negative = entry is not None and entry[0] < 0
                if negative or was_negative.get(item):
                    flags[item] = negative
            if flags:
                plan.hidden[user] = flags
            states[user] = state
            user_outcomes[user] = outcomes - before
            for item in unknown if fold_items else ():
                entry = state.items.get(item)
                if entry is not None:  # (else evicted by the history bound already)
                    weight = entry[0]
                    conf = float(confidence(weight, model.alpha)) if weight else 0.0
                    touches.append(Touch(item, user, conf, int(entry[1])))

        if changed_values:
            # Recorded before the Redis write: a retry of this batch finds its events applied
            # (no new values), and must still wait for these records before committing.
            durable.append(await self.table.put_many(changed_values))
        n_vectors = 0
        if model is not None and model.uses_factors:
            solved: dict[str, np.ndarray] = {}
            n_vectors = self._fold_in(model, states.items(), plan, solved)
            if touches:
                await self.item_folder.plan(model, touches, solved, plan)
        if counted:
            self._plan_popularity(counted, plan)
        refused, popularity_refused = await self._write(plan)
        for user, exc in refused.items():
            outcomes -= user_outcomes[user]
            for event, record in batch.by_user.get(user, []):
                await self._reject(Rejected(record, exc.reason, None,
                                            f"redis refused the write: {exc.detail}"))
                outcomes[(event.event_type, exc.reason)] += 1
        if popularity_refused is not None:
            # The users' vectors and seen sets were written, trending was not: these events
            # are dead-lettered (not re-counted as outcomes) so none is silently missing.
            for user, record in counted_from:
                if user not in refused:
                    await self._reject(Rejected(
                        record, popularity_refused.reason, None,
                        f"redis refused the trending update: {popularity_refused.detail}"))

        for why, n in clamped.items():
            telemetry.CLAMPED.labels(why).inc(n)
        done_ms = time.time() * 1000.0
        for _item, ts, _w in applied:
            telemetry.FRESHNESS_SECONDS.observe(max(0.0, done_ms - ts) / 1000.0)
        for (event_type, outcome), n in outcomes.items():
            telemetry.EVENTS.labels(event_type, outcome).inc(n)
        by_outcome: Counter[str] = Counter()
        for (_, outcome), n in outcomes.items():
            by_outcome[outcome] += n
        return by_outcome, n_vectors

    async def _write(self, plan: WritePlan
                     ) -> tuple[dict[str, RedisRejected], RedisRejected | None]:
        """Write a batch's plan; returns the users whose writes Redis refused, and why its
        popularity write was refused (or None). While Redis is unreachable, keep trying the
        same plan (its effects are idempotent): the batch's offsets stay uncommitted and the
        health check turns unhealthy (stream.health)."""
        while True:
            try:
                await self.writer.write(plan)
                return {}, None
            except RedisUnavailable as exc:
                telemetry.REDIS_UNAVAILABLE.inc()
                log.error("%s; keeping the batch and trying again", exc)
            except RedisRejected as exc:
                log.error("redis refused a batch write (%s): writing it user by user", exc)
                try:
                    return await self.writer.write_each(plan)
                except RedisUnavailable as unavailable:
                    telemetry.REDIS_UNAVAILABLE.inc()
                    log.error("%s; keeping the batch and trying again", unavailable)

    def _fold_in(self, model: ModelVersion, states: Iterable[tuple[str, UserState]],
                 plan: WritePlan, solved_out: dict[str, np.ndarray] | None = None) -> int:
        """New vectors of these users under `model`: the ALS fold-in, or for a neural version
        its user tower over their recent items; either way one call for the whole batch."""
        if model.tower is not None:
            return self._tower(model, states, plan)
        users, histories = fold_in_inputs(states, model.item_index, model.alpha)
        if not users:
            return 0
        started = time.perf_counter()
        solved = fold_in_batch(model.item_factors, model.yty, model.regularization, histories)
        telemetry.FOLDIN_SECONDS.observe(time.perf_counter() - started)
        if solved_out is not None:
            solved_out.update(zip(users, solved, strict=True))
        return self._plan_vectors(model, users, solved, plan)

    def _tower(self, model: ModelVersion, states: Iterable[tuple[str, UserState]],
               plan: WritePlan) -> int:
        tower = model.tower
        assert tower is not None
        users, sequences = tower_inputs(states, model.item_index, tower.window)
        if sequences.unknown:
            telemetry.TOWER_SKIPPED_ITEMS.labels("unknown").inc(sequences.unknown)
        if sequences.truncated:
            telemetry.TOWER_SKIPPED_ITEMS.labels("truncated").inc(sequences.truncated)
        if not users:
            return 0
        started = time.perf_counter()
        vectors = tower.user_vectors(sequences.rows)
        telemetry.TOWER_SECONDS.observe(time.perf_counter() - started)
        return self._plan_vectors(model, users, vectors, plan)

    def _plan_vectors(self, model: ModelVersion, users: Sequence[str], solved: Iterable,
                      plan: WritePlan) -> int:
        for user, vector in zip(users, solved, strict=True):
            hash_key = self.keys.user_vector_hash(model.version, user)
            plan.vectors.setdefault(hash_key, {})[user] = pack_vector(vector)
        return len(users)

    def _plan_popularity(self, counted: list[TrendingEvent], plan: WritePlan) -> None:
        t0 = max(e.ts_ms for e in counted) / 1000.0
        plan.popularity_topic = self.topic
        for window, tau in POPULARITY_WINDOWS.items():
            plan.popularity[window] = (t0, by_partition(counted, float(tau), t0))

    # --- model switches and rebalances ------------------------------------------------
    async def switch_to(self, model: ModelVersion) -> int:
        async with self.lock:
            previous = self.holder.swap(model)
        log.info("switched model %s -> %s (snapshot up to %d ms)",
                 previous.version if previous else "none", model.version,
                 model.snapshot_latest_event_ms)
        written = await self.recompute(model)
        # After the users: the re-folded items read their vectors under the new version. Chunk
        # by chunk under the batches' lock, so no stale re-fold overwrites a batch's vector.
        await self.item_folder.refold(previous, model, self.lock,
                                      lambda: self.holder.current is model)
        return written

    async def recompute(self, model: ModelVersion) -> int:
        """Fold in, under `model`, the users of owned partitions whose vector under it is
        missing or older than their history: users with events after the model's data
        snapshot (the trainer did not see those), and users the trainer wrote no vector for.
        Returns how many vectors were written (none for a version without factors)."""
        if not model.uses_factors:
            log.info("version %s (%s) has no factors: no user vectors to recompute",
                     model.version, model.kind)
            return 0
        users = self.table.users()
        active_since = now_ms() - self.recompute_window_ms
        skipped = 0
        snapshot = model.manifest.get("snapshot") or {}
        latest_ms = model.snapshot_latest_event_ms
        offsets = {str(k): int(v) for k, v in (snapshot.get("offsets") or {}).items()}
        written = 0
        for start in range(0, len(users), RECOMPUTE_CHUNK):
            async with self.lock:
                if self.holder.current is not model:
                    log.info("recompute for %s stopped: a newer version is in use", model.version)
                    break
                owned = self.owned_partitions()
                candidates: dict[str, UserState] = {}
                for user in users[start:start + RECOMPUTE_CHUNK]:
                    state = self._load(user)
                    if state.version == model.version or not state.items:
                        continue  # its vector under `model` was written from this history
                    if state.last_active_ms() < active_since:
                        skipped += 1  # inactive: the trainer's vector, or a fallback, until
                        continue      # their next event folds them in again
                    if owned is not None and state.partition not in owned:
                        continue  # another worker owns it now
                    candidates[user] = state
                late = {u for u, s in candidates.items()
                        if s.has_events_after(latest_ms, offsets, self.topic)}
                others = [u for u in candidates if u not in late]
                exists = await self.writer.vectors_exist(model.version, others)
                missing = {u for u, found in zip(others, exists, strict=True) if not found}
                todo = [(u, s) for u, s in candidates.items() if u in late or u in missing]
                plan = WritePlan()
                n = self._fold_in(model, todo, plan)
                refused, _ = await self._write(plan)  # recomputation plans no popularity
                if refused:
                    log.error("redis refused the recomputed vectors of %d users: %s",
                              len(refused), sorted(refused)[:10])
                written += n - len(refused)
        telemetry.RECOMPUTED_USERS.inc(written)
        log.info("recomputed %d user vectors under %s (%d users inactive for over %.0f days "
                 "left out)", written, model.version, skipped,
                 self.recompute_window_ms / 86_400_000)
        return written

    async def forget_idle(self, at_ms: int | None = None) -> int:
        """Tombstone the table entries of owned users idle for longer than
        `stream_user_idle_days` (bounds the table; their next event starts a new history).
        Returns how many were forgotten."""
        cutoff = (now_ms() if at_ms is None else at_ms) - self.idle_ms
        users = self.table.users()
        forgotten = 0
        for start in range(0, len(users), RECOMPUTE_CHUNK):
            async with self.lock:
                owned = self.owned_partitions()
                idle = []
                for user in users[start:start + RECOMPUTE_CHUNK]:
                    raw = self.table.get_value(user)
                    if raw is None:
                        continue
                    state = self._load(user)
                    if owned is not None and state.partition not in owned:
                        continue
                    if state.last_active_ms() < cutoff:
                        idle.append((user, max(state.partition, 0)))
                if idle:  # one changelog batch per chunk, not one per user
                    await self.table.erase_many(idle)
                    forgotten += len(idle)
            # let batches run between chunks: a sweep of many users must not hold the event
            # loop (the consumer would see its partitions stall and seek back)
            await asyncio.sleep(0)
        if forgotten:
            telemetry.IDLE_FORGOTTEN.inc(forgotten)
            log.info("forgot %d users idle for over %g s", forgotten, self.idle_ms / 1000)
        return forgotten
