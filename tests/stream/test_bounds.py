"""Memory bounds of the stream worker, against the real Redis: the table forgets users idle
past `stream_user_idle_days` (tombstone), a model switch recomputes only users active within
`stream_switch_active_days`, and the worker's clock, not the event's, decides."""

from __future__ import annotations

import asyncio
import time

import pytest

from recsys.keys import Keys
from recsys.modelstore import aload_model
from recsys.userstate import UserState
from tests.stream.conftest import publish
from tests.stream.test_processor import DictTable, Harness, _events

pytestmark = pytest.mark.integration
DAY_MS = 86_400_000


class ErasableTable(DictTable):
    def __init__(self) -> None:
        super().__init__()
        self.tombstones: list[tuple[str, int]] = []

    async def erase(self, user, partition):
        return await self.erase_many([(user, partition)])

    async def erase_many(self, users):
        for user, partition in users:
            self.data.pop(user, None)
            self.tombstones.append((user, partition))
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def age(table: DictTable, user: str, days: float) -> None:
    state = UserState.from_bytes(table.data[user])
    state.touched_ms = int(time.time() * 1000 - days * DAY_MS)
    table.data[user] = state.to_bytes()


def test_idle_users_are_forgotten_and_a_switch_recomputes_only_active_ones(
        settings, redis_url, redis_client, clustered, clustered_v2):
    keys = Keys(settings.redis_namespace)
    publish(redis_client, keys, "v1", clustered)
    s = settings.model_copy(update={"stream_user_idle_days": 30, "stream_switch_active_days": 7})

    async def scenario():
        table = ErasableTable()
        h = Harness(s, redis_url, table=table)
        h.holder.swap(await aload_model(h.redis, h.keys))
        # event times far in the past: the worker's own clock decides who is active
        old_ms = int(time.time() * 1000) - 400 * DAY_MS
        for user in ("fresh", "quiet", "gone"):
            await h.processor.process(h.records(_events(user, clustered.items_of(1)[:3],
                                                        start_ms=old_ms)))
        age(table, "quiet", 10)  # inside the idle bound, outside the switch window
        age(table, "gone", 31)
        assert await h.processor.forget_idle() == 1
        assert set(table.data) == {"fresh", "quiet"}
        assert table.tombstones == [("gone", 0)]

        publish(redis_client, keys, "v2", clustered_v2)
        written = await h.processor.switch_to(await aload_model(h.redis, h.keys))
        assert written == 1
        assert await h.vector("v2", "fresh") is not None
        assert await h.vector("v2", "quiet") is None  # until their next event
        await h.processor.process(h.records(_events("quiet", clustered.items_of(2)[:1],
                                                     prefix="quiet-2")))
        assert await h.vector("v2", "quiet") is not None
        await h.redis.aclose()

    asyncio.run(scenario())
