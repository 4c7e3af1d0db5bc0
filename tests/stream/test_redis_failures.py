"""The stream worker against a Redis that refuses or drops writes: error replies are not
retried forever (the refused users' events are dead-lettered with the reason, the others land;
events a refused trending update did not count are dead-lettered too),
one user with thousands of items in a batch is written, a retried trending update counts
once, retries of connection errors are bounded, and /healthz reports a stalled batch."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from recsys.keys import Keys
from recsys.modelstore import aload_model
from stream import telemetry
from stream.health import Heartbeat, start_server
from stream.redis_writer import RedisUnavailable, RedisWriter, WritePlan
from tests.stream.conftest import http_get, publish
from tests.stream.test_processor import Harness, _events

pytestmark = pytest.mark.integration


def test_wrongtype_dead_letters_only_that_users_events_and_the_batch_moves_on(
        settings, redis_url, redis_client, clustered):
    keys = Keys(settings.redis_namespace)
    publish(redis_client, keys, "v1", clustered)
    redis_client.set(keys.seen("broken"), "not a sorted set")  # WRONGTYPE for ZADD

    async def scenario():
        h = Harness(settings, redis_url)
        h.holder.swap(await aload_model(h.redis, h.keys))
        records = h.records(_events("broken", clustered.items_of(1)[:3])
                            + _events("fine", clustered.items_of(2)[:2]))
        result = await asyncio.wait_for(h.processor.process(records), 10)
        assert result.outcomes["redis_wrongtype"] == 3
        assert result.outcomes["ok"] == 2
        assert [d["reason"] for d in h.letters] == ["redis_wrongtype"] * 3
        assert "WRONGTYPE" in h.letters[0]["message"]
        assert await h.vector("v1", "fine") is not None
        assert await h.redis.zcard(keys.seen("fine")) == 2
        await h.redis.aclose()

    rejected = telemetry.REDIS_REJECTED.labels("redis_wrongtype")._value.get()
    asyncio.run(scenario())
    assert telemetry.REDIS_REJECTED.labels("redis_wrongtype")._value.get() > rejected


def test_one_user_with_thousands_of_items_in_a_batch_is_written(settings, redis_url,
                                                                redis_client, clustered):
    keys = Keys(settings.redis_namespace)
    publish(redis_client, keys, "v1", clustered)
    n = 12_000  # 24,000 ZADD arguments: past Lua's unpack() limit in one call

    async def scenario():
        h = Harness(settings, redis_url)
        h.holder.swap(await aload_model(h.redis, h.keys))
        items = [f"x{i}" for i in range(n)]
        result = await asyncio.wait_for(h.processor.process(h.records(_events("heavy", items))),
                                        30)
        assert not h.letters
        assert result.outcomes["unknown_item"] == n
        assert await h.redis.zcard(keys.seen("heavy")) == settings.stream_history_max_items
        await h.redis.aclose()

    asyncio.run(scenario())


def test_a_retried_trending_update_counts_once(settings, redis_url, redis_client):
    keys = Keys(settings.redis_namespace)
    now = time.time()

    async def scenario():
        client = aioredis.Redis.from_url(redis_url)
        writer = RedisWriter(client, keys, seen_max=10)
        plan = WritePlan(popularity={w: (now, {"0": [(0, "i1", 1.0), (1, "i2", 2.0)]})
                                     for w in ("1h", "24h")}, popularity_topic="t")
        await writer.write(plan)
        once = dict(await client.zrange(keys.popularity("1h"), 0, -1, withscores=True))
        await writer.write(plan)  # the reply of the first was lost: the same plan again
        twice = dict(await client.zrange(keys.popularity("1h"), 0, -1, withscores=True))
        assert twice == once
        # a new batch with new offsets does count
        other = WritePlan(popularity={"1h": (now, {"0": [(2, "i1", 1.0)]})},
                          popularity_topic="t")
        await writer.write(other)
        after = dict(await client.zrange(keys.popularity("1h"), 0, -1, withscores=True))
        assert after[b"i1"] == pytest.approx(2 * once[b"i1"])
        assert await client.pttl(keys.popularity_batch("1h", plan.batch_id)) > 0
        # Another process replays offsets 1..2 (new plan, new batch id) and adds offset 3:
        # only offset 3 counts.
        replay = WritePlan(popularity={"1h": (now, {"0": [(1, "i2", 2.0), (2, "i1", 1.0),
                                                          (3, "i2", 1.0)]})},
                           popularity_topic="t")
        await writer.write(replay)
        replayed = dict(await client.zrange(keys.popularity("1h"), 0, -1, withscores=True))
        assert replayed[b"i1"] == pytest.approx(after[b"i1"])
        assert replayed[b"i2"] == pytest.approx(once[b"i2"] * 1.5)
        assert await client.hget(keys.popularity_applied("1h", "t"), "0") == b"3"
        await client.aclose()

    asyncio.run(scenario())


def test_connection_errors_are_retried_a_bounded_number_of_times(settings):
    async def scenario():
        client = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
        slept: list[float] = []

        async def no_sleep(seconds: float) -> None:
            slept.append(seconds)

        writer = RedisWriter(client, Keys(settings.redis_namespace), seen_max=10,
                             sleep=no_sleep, max_attempts=4)
        with pytest.raises(RedisUnavailable):
            await writer.write(WritePlan(seen={"u": {"i": 1}}))
        assert len(slept) == 3
        assert slept[1] > slept[0] * 0.9 / 1.5  # backoff grows (jittered)
        await client.aclose()

    asyncio.run(scenario())


def test_seen_sets_expire_after_the_configured_ttl(settings, redis_url):
    keys = Keys(settings.redis_namespace)

    async def scenario():
        client = aioredis.Redis.from_url(redis_url)
        writer = RedisWriter(client, keys, seen_max=10, seen_ttl_s=60)
        await writer.write(WritePlan(seen={"u": {"i": 1}}))
        ttl = await client.pttl(keys.seen("u"))
        assert 0 < ttl <= 60_000
        await client.aclose()

    asyncio.run(scenario())


def test_healthz_reports_a_batch_stuck_on_redis_and_a_silent_loop():
    clock = [1000.0]
    heartbeat = Heartbeat(stall_s=30, clock=lambda: clock[0])
    port = start_server(0, heartbeat, addr="127.0.0.1")
    base = f"http://127.0.0.1:{port}"
    assert http_get(f"{base}/healthz") == (200, "ok")
    heartbeat.batch_started()
    clock[0] += 20
    heartbeat.beat()  # the loop runs, the batch is still retrying
    assert http_get(f"{base}/healthz")[0] == 200
    clock[0] += 20
    heartbeat.beat()
    status, reason = http_get(f"{base}/healthz")
    assert status == 503 and "batch in progress for 40s" in reason
    assert "recsys_stream_batch_in_progress_seconds 40.0" in http_get(f"{base}/metrics")[1]
    heartbeat.batch_done()
    assert http_get(f"{base}/healthz")[0] == 200
    clock[0] += 31  # nothing beats: the event loop is blocked
    status, reason = http_get(f"{base}/healthz")
    assert status == 503 and "event loop silent" in reason


def test_redis_at_maxmemory_dead_letters_with_redis_oom_and_the_worker_moves_on(
        settings, redis_client, clustered, tmp_path):
    """The memory bound of Redis itself (compose sets maxmemory): past it, writes are refused
    with OOM; the batch's events go to the dead-letter topic with reason redis_oom, at once."""
    import redis as redis_lib

    from shell.localstack import start_redis

    own = start_redis(tmp_path)
    try:
        url = f"redis://127.0.0.1:{own.port}/0"
        sync = redis_lib.Redis.from_url(url)
        keys = Keys(settings.redis_namespace)
        publish(sync, keys, "v1", clustered)
        used = int(sync.info("memory")["used_memory"])
        sync.config_set("maxmemory-policy", "noeviction")
        sync.config_set("maxmemory", str(used + 64 * 1024))
        filler = 0
        while True:  # fill it up to the bound
            try:
                sync.set(f"filler:{filler}", b"x" * 4096)
            except redis_lib.exceptions.OutOfMemoryError:
                break
            filler += 1

        async def scenario():
            h = Harness(settings, url)
            h.holder.swap(await aload_model(h.redis, h.keys))
            records = h.records(_events("u-oom", clustered.items_of(3)[:4]))
            result = await asyncio.wait_for(h.processor.process(records), 15)
            assert result.outcomes["redis_oom"] == 4
            assert [d["reason"] for d in h.letters] == ["redis_oom"] * 4
            assert not await h.redis.hexists(keys.user_vectors("v1"), "u-oom")
            await h.redis.aclose()

        before = telemetry.REDIS_REJECTED.labels("redis_oom")._value.get()
        asyncio.run(scenario())
        assert telemetry.REDIS_REJECTED.labels("redis_oom")._value.get() > before
        sync.close()
    finally:
        own.stop()


def test_a_refused_trending_update_dead_letters_the_events_it_did_not_count(
        settings, redis_url, redis_client, clustered):
    """Redis refuses only the popularity write (here WRONGTYPE: the 1h key is not a sorted
    set; under OOM the same happens when the users' writes fit after an eviction and the
    script does not): the users' vectors land, and every event that trending did not count
    is dead-lettered with the reason, none silently dropped."""
    keys = Keys(settings.redis_namespace)
    publish(redis_client, keys, "v1", clustered)
    redis_client.set(keys.popularity("1h"), b"not a sorted set")

    async def scenario():
        h = Harness(settings, redis_url)
        h.holder.swap(await aload_model(h.redis, h.keys))
        records = h.records(_events("u-pop", clustered.items_of(2)[:3]))
        await asyncio.wait_for(h.processor.process(records), 15)
        assert await h.redis.hexists(keys.user_vectors("v1"), "u-pop")
        assert [d["reason"] for d in h.letters] == ["redis_wrongtype"] * 3
        await h.redis.aclose()

    asyncio.run(scenario())
