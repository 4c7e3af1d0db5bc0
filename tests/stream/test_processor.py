"""The batch processor in-process against the real Redis (the table is a dict: the Faust
side is covered by the worker tests): outcomes, idempotence, no model yet, recomputation
after a switch, Redis outages, and a batch that keeps failing."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
import redis.asyncio as aioredis

from recsys.events import Event
from recsys.keys import Keys
from recsys.modelstore import aload_model, unpack_vector
from recsys.userstate import UserState
from shell.localstack import start_redis
from stream import telemetry
from stream.current_model import FoldInModel
from stream.decode import Record
from stream.processor import BatchProcessor
from stream.redis_writer import RedisWriter
from tests.stream.conftest import FACTORS, expected_vector, publish, relative_error

pytestmark = pytest.mark.integration


class DictTable:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.partition: dict[str, int] = {}

    def get_value(self, user):
        return self.data.get(user)

    async def put_many(self, values):
        for user, value, partition in values:
            self.data[user] = value
            self.partition[user] = partition
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def users(self):
        return list(self.data)


class Harness:
    def __init__(self, settings, redis_url, owned=None, table=None):
        self.settings = settings
        self.keys = Keys(settings.redis_namespace)
        self.redis = aioredis.Redis.from_url(redis_url)
        self.table = table or DictTable()
        self.letters: list[dict] = []
        self.holder = FoldInModel()
        writer = RedisWriter(self.redis, self.keys, seen_max=settings.stream_history_max_items,
                             backoff_max_s=0.2)

        async def dead_letter(key, value):
            self.letters.append(orjson.loads(value))

        self.processor = BatchProcessor(settings, self.table, writer, self.holder, dead_letter,
                                        "test-worker", owned_partitions=lambda: owned)
        self.offset = 0

    def records(self, events, partition=0, raw=()):
        out = []
        for event in events:
            out.append(Record("t", partition, self.offset, event.key, event.to_json()))
            self.offset += 1
        for value in raw:
            out.append(Record("t", partition, self.offset, b"k", value))
            self.offset += 1
        return out

    async def vector(self, version, user):
        raw = await self.redis.hget(self.keys.user_vectors(version), user)
        return None if raw is None else unpack_vector(raw, FACTORS)


def _events(user, items, types=None, start_ms=None, prefix=None):
    start_ms = start_ms or int(time.time() * 1000) - 10_000
    types = types or ["view"] * len(items)
    return [Event.create(user, item, kind, timestamp=start_ms + n,
                         event_id=f"{prefix or user}-{n}",
                         value=4.0 if kind == "rating" else None)
            for n, (item, kind) in enumerate(zip(items, types, strict=True))]


def test_fold_in_outcomes_and_idempotent_replay(settings, redis_url, redis_client, clustered):
    publish(redis_client, Keys(settings.redis_namespace), "v1", clustered)
    items = clustered.items_of(2)

    async def scenario():
        h = Harness(settings, redis_url)
        h.holder.swap(await aload_model(h.redis, h.keys))
        events = _events("u1", [items[0], items[1], items[0], "brand-new-item", items[3]],
                         ["view", "addtocart", "transaction", "view", "rating"])
        records = h.records(events + [events[1]])  # the last one re-sent: same event id
        result = await h.processor.process(records)
        assert result.outcomes == {"ok": 4, "unknown_item": 1, "duplicate": 1, "invalid": 0}
        first = await h.vector("v1", "u1")
        expected = expected_vector(events, clustered, settings.event_weights)
        assert relative_error(first, expected) < 1e-5

        # The unknown item stays in the history (a later model may know it) and in seen.
        state = UserState.from_bytes(h.table.get_value("u1"))
        assert "brand-new-item" in state.items and state.version == "v1"
        seen = await h.redis.zrange(h.keys.seen("u1"), 0, -1)
        assert {s.decode() for s in seen} == {items[0], items[1], items[3], "brand-new-item"}
        pop = await h.redis.zrevrange(h.keys.popularity("1h"), 0, 0)
        assert pop == [items[0].encode()]  # view + transaction: the heaviest

        # A replay of the whole batch (restart before the commit) changes nothing.
        popularity = await h.redis.zrange(h.keys.popularity("1h"), 0, -1, withscores=True)
        again = await h.processor.process(records)
        assert again.outcomes == {"duplicate": 6, "invalid": 0}
        assert np.array_equal(await h.vector("v1", "u1"), first)
        assert await h.redis.zrange(h.keys.popularity("1h"), 0, -1, withscores=True) == popularity
        await h.redis.aclose()

    asyncio.run(scenario())


def test_invalid_records_go_to_the_dead_letter_topic_and_valid_ones_still_count(
        settings, redis_url, redis_client, clustered):
    publish(redis_client, Keys(settings.redis_namespace), "v1", clustered)

    async def scenario():
        h = Harness(settings, redis_url)
        h.holder.swap(await aload_model(h.redis, h.keys))
        good = _events("u2", clustered.items_of(0)[:2])
        result = await h.processor.process(h.records(good, raw=[b"{oops", b'{"user_id": "u2"}']))
        assert result.outcomes["invalid"] == 2 and result.outcomes["ok"] == 2
        assert [(d["reason"], d["offset"]) for d in h.letters] == [
            ("malformed_json", 2), ("missing_field", 3)]
        assert await h.vector("v1", "u2") is not None
        await h.redis.aclose()

    asyncio.run(scenario())


def test_no_model_keeps_history_then_first_model_recomputes_only_what_is_needed(
        settings, redis_url, redis_client, clustered):
    keys = Keys(settings.redis_namespace)

    async def scenario():
        h = Harness(settings, redis_url, owned={0})
        before = telemetry.EVENTS.labels("view", "no_model")._value.get()
        early = _events("early", clustered.items_of(1)[:3])
        old = _events("old", clustered.items_of(3)[:2], start_ms=1_600_000_000_000)
        away = _events("away", clustered.items_of(4)[:2])
        await h.processor.process(h.records(early + old))
        await h.processor.process(h.records(away, partition=1))
        assert telemetry.EVENTS.labels("view", "no_model")._value.get() - before == 7
        assert await h.redis.exists(h.keys.seen("early"))
        assert not await h.redis.keys(f"{settings.redis_namespace}:uvec:*")

        # The first model: its snapshot ends before "early" acted but after "old" did, and
        # the trainer wrote a vector for "old". "away" lives in a partition we do not own.
        trainer_vector = np.full((1, FACTORS), 0.5, dtype=np.float32)
        publish(redis_client, keys, "v1", clustered, snapshot_ms=1_700_000_000_000,
                user_ids=["old"], user_factors=trainer_vector)
        model = await aload_model(h.redis, h.keys)
        assert await h.processor.switch_to(model) == 1
        assert relative_error(await h.vector("v1", "early"),
                              expected_vector(early, clustered, settings.event_weights)) < 1e-5
        assert np.array_equal(await h.vector("v1", "old"), trainer_vector[0])
        assert await h.vector("v1", "away") is None
        await h.redis.aclose()

    asyncio.run(scenario())


def test_a_redis_outage_is_retried_until_the_write_lands(settings, redis_client, clustered):
    publish(redis_client, Keys(settings.redis_namespace), "v1", clustered)
    workdir = Path(tempfile.mkdtemp(prefix="stream-redis-"))
    own = start_redis(workdir)
    try:
        own_url = f"redis://127.0.0.1:{own.port}/0"
        import redis as redis_lib

        copy = redis_lib.Redis.from_url(own_url)
        for key in redis_client.scan_iter(f"{settings.redis_namespace}:model:*"):
            copy.set(key, redis_client.get(key))

        async def scenario():
            nonlocal own
            h = Harness(settings, own_url)
            h.holder.swap(await aload_model(h.redis, h.keys))
            own.stop()
            retries = telemetry.REDIS_RETRIES._value.get()
            task = asyncio.ensure_future(
                h.processor.process(h.records(_events("u3", clustered.items_of(5)[:2]))))
            await asyncio.sleep(0.8)
            assert not task.done(), "the batch must wait for Redis, not move on"
            assert telemetry.REDIS_RETRIES._value.get() > retries
            own = start_redis(workdir, port=own.port)
            result = await asyncio.wait_for(task, 10)
            assert result.vectors == 1
            assert await h.vector("v1", "u3") is not None
            await h.redis.aclose()

        asyncio.run(scenario())
    finally:
        own.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def test_a_batch_that_keeps_failing_goes_to_the_dead_letter_topic(settings, redis_url,
                                                                  redis_client, clustered):
    publish(redis_client, Keys(settings.redis_namespace), "v1", clustered)

    class BrokenTable(DictTable):
        async def put_many(self, values):
            raise RuntimeError("disk on fire")

    async def scenario():
        s = settings.model_copy(update={"stream_batch_max_retries": 1})
        h = Harness(s, redis_url, table=BrokenTable())
        h.holder.swap(await aload_model(h.redis, h.keys))
        result = await h.processor.process(h.records(_events("u4", clustered.items_of(0)[:2])))
        assert result.outcomes["processing_error"] == 2
        assert [d["reason"] for d in h.letters] == ["processing_error"] * 2
        assert orjson.loads(h.letters[0]["payload"])["user_id"] == "u4"
        await h.redis.aclose()

    asyncio.run(scenario())


def test_one_future_dated_event_does_not_empty_trending(settings, redis_url, redis_client,
                                                        clustered):
    """The issue's case: one view 23 h ahead (a client sending local time as UTC) used to move
    the 1-hour landmark a day on and prune every other item."""
    publish(redis_client, Keys(settings.redis_namespace), "v1", clustered)
    items = clustered.items_of(1)

    async def scenario():
        h = Harness(settings, redis_url)
        h.holder.swap(await aload_model(h.redis, h.keys))
        now = int(time.time() * 1000)
        flow = [Event.create(f"u{n}", items[n % 5], "view", timestamp=now - 1000 + n,
                             event_id=f"flow-{n}") for n in range(40)]
        await h.processor.process(h.records(flow))
        before = await h.redis.zrevrange(h.keys.popularity("1h"), 0, -1)
        assert len(before) == 5
        clamped_before = telemetry.CLAMPED.labels("future")._value.get()

        ahead = Event.create("clock-skewed", items[9], "view", timestamp=now + 23 * 3_600_000,
                             event_id="ahead")
        more = [Event.create(f"u{n}", items[n % 5], "view", timestamp=now + n,
                             event_id=f"more-{n}") for n in range(10)]
        await h.processor.process(h.records([ahead, *more]))

        after = await h.redis.zrevrange(h.keys.popularity("1h"), 0, -1)
        others = [i for i in after if i != items[9].encode()]
        assert others == before  # the other items are all there, in the same order
        assert items[9].encode() in after  # the event itself still counts, at arrival
        assert telemetry.CLAMPED.labels("future")._value.get() == clamped_before + 1
        state = UserState.from_bytes(h.table.get_value("clock-skewed"))
        assert state.last_event_ms <= int(time.time() * 1000)
        await h.redis.aclose()

    asyncio.run(scenario())


def test_invariant_3_by_offsets_with_a_future_dated_event_in_the_snapshot(
        settings, redis_url, redis_client, clustered, clustered_v2):
    """The trainer's snapshot is a set of offsets. Its newest event time is a day ahead here
    (an unclamped client clock): users who acted after the snapshot, at ordinary times, are
    still recomputed under the new version, and users who did not keep the trainer's vector."""
    keys = Keys(settings.redis_namespace)
    publish(redis_client, keys, "v1", clustered)
    items = clustered.items_of(3)

    async def scenario():
        h = Harness(settings, redis_url)
        h.holder.swap(await aload_model(h.redis, h.keys))
        now = int(time.time() * 1000)
        phase_a = [Event.create(f"u{u}", items[(u + k) % len(items)], "view",
                                timestamp=now - 60_000 + k, event_id=f"a-{u}-{k}")
                   for u in range(6) for k in range(3)]
        phase_a.append(Event.create("u0", items[7], "view", timestamp=now + 23 * 3_600_000,
                                    event_id="a-future"))
        await h.processor.process(h.records(phase_a))
        # the next offset the trainer would read, per partition of the topic
        snapshot_offsets = {f"{settings.interactions_topic}:0": h.offset}

        trained = [f"u{u}" for u in range(6)]
        trainer_vectors = np.stack([
            expected_vector([e for e in phase_a if e.user_id == user], clustered_v2,
                            settings.event_weights) for user in trained]).astype(np.float32)
        from recsys.modelstore import stage_model_version
        from tests.stream.conftest import manifest
        stage_model_version(redis_client, keys, "v2", clustered_v2.item_ids,
                            clustered_v2.factors,
                            manifest("v2", clustered_v2, now + 23 * 3_600_000,
                                     offsets=snapshot_offsets),
                            user_ids=trained, user_factors=trainer_vectors)

        # After the snapshot, before the switch: ordinary times, older than the snapshot's
        # (bogus) newest event time.
        phase_b = [Event.create(f"u{u}", items[(u + 11) % len(items)], "addtocart",
                                timestamp=now - 1_000 + u, event_id=f"b-{u}")
                   for u in (1, 3)]
        await h.processor.process(h.records(phase_b))
        model = await aload_model(h.redis, h.keys, "v2")
        written = await h.processor.switch_to(model)
        assert written == 2
        for u in (1, 3):
            history = [e for e in phase_a + phase_b if e.user_id == f"u{u}"]
            want = expected_vector(history, clustered_v2, settings.event_weights)
            assert relative_error(await h.vector("v2", f"u{u}"), want) < 1e-5
        for n, user in enumerate(trained):
            if user not in ("u1", "u3"):
                assert np.array_equal(await h.vector("v2", user), trainer_vectors[n])
        await h.redis.aclose()

    asyncio.run(scenario())


def test_negative_feedback_hides_the_item_and_folds_in_as_the_trainer_reads_it(
        settings, redis_url, redis_client, clustered):
    """dislike/hide and low ratings: the vector is the fold-in of the trainer's confidence row
    for the same events (negative confidence), the item is hidden from the user's lists at
    once, trending takes nothing from it, and enough positive feedback shows it again."""
    import pandas as pd

    from recsys.foldin import fold_in
    from recsys.matrix import confidence_matrix, index_events
    from recsys.settings import Settings
    from tests.stream.conftest import ALPHA, REGULARIZATION

    settings = Settings.model_validate({**settings.model_dump(), "negative_rating_max": 2.0})
    publish(redis_client, Keys(settings.redis_namespace), "v1", clustered)
    items = clustered.items_of(1)

    def trainer_vector(events):
        frame = pd.DataFrame({
            "user_id": [e.user_id for e in events], "item_id": [e.item_id for e in events],
            "event_type": [str(e.event_type) for e in events],
            "value": [np.nan if e.value is None else e.value for e in events],
            "timestamp": [e.timestamp for e in events]})
        indexed = index_events(frame, settings.event_weights,
                               negative_rating_max=settings.negative_rating_max)
        row = confidence_matrix(indexed, ALPHA)[0]
        index = {item: n for n, item in enumerate(clustered.item_ids)}
        rows = np.array([index[str(indexed.item_ids[c])] for c in row.indices])
        assert (row.data < 0).any()
        return fold_in(clustered.factors, clustered.factors.T.astype(np.float64)
                       @ clustered.factors, REGULARIZATION, rows, row.data.astype(np.float64))

    async def scenario():
        h = Harness(settings, redis_url)
        h.holder.swap(await aload_model(h.redis, h.keys))
        start = int(time.time() * 1000) - 10_000
        events = _events("neg", [items[0], items[1], items[0], items[2], items[3]],
                         ["view", "view", "dislike", "hide", "view"], start_ms=start)
        events.append(Event.create("neg", items[4], "rating", timestamp=start + 9,
                                   event_id="neg-r", value=1.0))
        result = await h.processor.process(h.records(events))
        assert result.outcomes["ok"] == 6
        hidden = {m.decode() for m in await h.redis.smembers(h.keys.hidden("neg"))}
        assert hidden == {items[0], items[2], items[4]}
        assert relative_error(await h.vector("v1", "neg"), trainer_vector(events)) < 1e-4
        trending = {m.decode() for m in await h.redis.zrange(h.keys.popularity("1h"), 0, -1)}
        assert items[2] not in trending and items[4] not in trending

        # Changing one's mind: a purchase outweighs the dislike, and the item shows again.
        more = [Event.create("neg", items[0], "transaction", timestamp=start + 20,
                             event_id="neg-t")]
        await h.processor.process(h.records(more))
        hidden = {m.decode() for m in await h.redis.smembers(h.keys.hidden("neg"))}
        assert hidden == {items[2], items[4]}
        assert relative_error(await h.vector("v1", "neg"),
                              trainer_vector(events + more)) < 1e-4
        await h.redis.aclose()

    asyncio.run(scenario())


def test_trending_counts_each_event_once_across_a_crash_on_either_side_of_the_redis_write(
        settings, redis_url, redis_client, clustered):
    """Invariant 4 for trending, by event: a worker killed after its table write and before
    its Redis write (the table says "applied", trending has nothing), and one killed after the
    Redis write but before its changelog records were durable (trending has them, the
    restarted worker's table does not). The restarted worker replays the same records."""
    publish(redis_client, Keys(settings.redis_namespace), "v1", clustered)
    items = clustered.items_of(1)

    async def scenario():
        first = Harness(settings, redis_url)
        first.holder.swap(await aload_model(first.redis, first.keys))
        events = _events("u7", items[:6]) + _events("u8", items[2:5], prefix="u8b")
        records = first.records(events)

        async def killed(plan):
            raise asyncio.CancelledError  # kill -9 before the Redis write

        first.processor.writer.write = killed
        with pytest.raises(asyncio.CancelledError):
            await first.processor.process(records)
        assert await first.redis.exists(first.keys.popularity("1h")) == 0
        assert first.table.get_value("u7") is not None  # the table holds the batch

        restarted = Harness(settings, redis_url, table=first.table)
        restarted.holder.swap(first.holder.current)
        again = await restarted.processor.process(records)
        assert again.outcomes["duplicate"] == len(events)  # the table dedupes them ...
        counts = await _trending_counts(restarted, events)
        assert counts == {item: float(sum(1 for e in events if e.item_id == item))
                          for item in {e.item_id for e in events}}  # ... trending counts them

        # Killed after the Redis write, before the changelog was durable: a worker with an
        # empty table replays the batch, in two pieces; trending must not count it again.
        fresh = Harness(settings, redis_url)
        fresh.holder.swap(first.holder.current)
        await fresh.processor.process(records[:4])
        await fresh.processor.process(records[4:])
        assert await _trending_counts(fresh, events) == counts
        for h in (first, restarted, fresh):
            await h.redis.aclose()

    asyncio.run(scenario())


async def _trending_counts(h, events) -> dict[str, float]:
    """Events counted per item in the 1h trending set: the stored score divided by what one
    view adds (all events are views, times within 10 s of each other)."""
    raw_ref = await h.redis.get(h.keys.popularity_ref("1h"))
    if raw_ref is None:  # nothing was ever counted
        return {e.item_id: 0.0 for e in events}
    ref = float(raw_ref)
    stored = dict(await h.redis.zrange(h.keys.popularity("1h"), 0, -1, withscores=True))
    counts = {}
    for item in {e.item_id for e in events}:
        one = sum(np.exp((e.timestamp / 1000.0 - ref) / 3600.0) for e in events
                  if e.item_id == item)
        n = sum(1 for e in events if e.item_id == item)
        weight = h.settings.event_weights["view"]
        counts[item] = round(stored.get(item.encode(), 0.0) / (weight * one / n), 3)
    return counts
