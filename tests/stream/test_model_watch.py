"""The model watcher against the real Redis: pub/sub switches promptly, the poll catches a
missed message, a broken version is refused and the one in use kept."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from recsys.keys import Keys
from recsys.modelstore import activate_version, stage_model_version
from stream import metrics
from stream.model_watch import ModelHolder, ModelWatcher
from tests.stream.conftest import manifest, publish

pytestmark = pytest.mark.integration


def test_switch_by_channel_by_poll_and_refusal_of_a_broken_version(
        redis_client, redis_url, unique_name, clustered, clustered_v2):
    keys = Keys(unique_name)
    publish(redis_client, keys, "v1", clustered)

    async def scenario():
        client = aioredis.Redis.from_url(redis_url)
        holder = ModelHolder()
        switched: list[str] = []

        async def on_new_model(model):
            holder.swap(model)
            switched.append(model.version)

        # Poll every 30 s: anything faster than that came through the channel.
        watcher = ModelWatcher(client, keys, holder, on_new_model, poll_s=30.0)
        task = asyncio.ensure_future(watcher.run())
        for _ in range(100):
            if switched:
                break
            await asyncio.sleep(0.02)
        assert switched == ["v1"]  # the first check at start-up

        await asyncio.to_thread(publish, redis_client, keys, "v2", clustered_v2)
        for _ in range(100):
            if len(switched) == 2:
                break
            await asyncio.sleep(0.02)
        assert switched == ["v1", "v2"], "the switch channel was not followed"
        assert holder.current.version == "v2" and holder.current.yty.shape == (16, 16)

        # A version whose factors do not fit its ids: refused, v2 stays in use.
        errors = metrics.MODEL_LOAD_ERRORS._value.get()
        stage_model_version(redis_client, keys, "bad", clustered.item_ids, clustered.factors,
                            manifest("bad", clustered))
        redis_client.set(keys.model_item_factors("bad"), b"\x00" * 12)
        await asyncio.to_thread(activate_version, redis_client, keys, "bad")
        await asyncio.sleep(0.5)
        assert holder.current.version == "v2"
        assert metrics.MODEL_LOAD_ERRORS._value.get() > errors

        # A pointer moved without a message (a lost publish): the poll alone finds it.
        task.cancel()
        redis_client.set(keys.current_model, "v1")
        watcher.poll_s = 0.1
        task = asyncio.ensure_future(watcher._poll())
        for _ in range(100):
            if holder.current.version == "v1":
                break
            await asyncio.sleep(0.02)
        assert holder.current.version == "v1"
        task.cancel()
        await client.aclose()

    asyncio.run(scenario())
