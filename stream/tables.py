"""The per-user history table: user id -> `recsys.userstate.UserState` bytes.

Partitioned like the interactions topic, so a user's history lives with the partition that
carries their events and moves with it on a rebalance (restored from the changelog by Faust).

Writes do not go through Faust's `table[key] = value` (one changelog send per record through
Faust's producer path, and the partition of the "current event", which a micro-batch of many
users and partitions does not have). `put_many` writes a batch's values to the table's store
and hands their changelog records to a `stream.changelog.ChangelogWriter`, each to the
partition the user's own events came from; the awaitable it returns resolves when the broker
has them all. Reads go straight to the store too (Faust's layers add only sensor calls).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import faust

from recsys.settings import Settings
from stream.changelog import ChangelogWriter

TABLE_NAME = "user_history"


class UserHistoryTable(faust.Table):
    changelog_writer: ChangelogWriter | None = None

    def get_value(self, user: str) -> bytes | None:
        return self.data.get(user)

    def changelog_key(self, user: str) -> bytes:
        """The key bytes Faust itself writes to this table's changelog for `user`."""
        key, _headers = self.changelog_topic.prepare_key(user, self.key_serializer)
        return key

    def value_for_changelog_key(self, key: bytes) -> bytes | None:
        user = self.app.serializers.loads_key(self.key_type, key, serializer=self.key_serializer)
        return self.data.get(user)

    async def put_many(self, values: Sequence[tuple[str, bytes, int]]
                       ) -> asyncio.Future[None]:
        """Store (user, value, partition) entries; the future resolves once their changelog
        records are acknowledged by the broker."""
        if self.changelog_writer is None:
            raise RuntimeError("the history table's changelog writer is not set up")
        data = self.data
        records = []
        for user, value, partition in values:
            data[user] = value
            records.append((partition, self.changelog_key(user), value))
        return await self.changelog_writer.send(records)

    async def erase(self, user: str, partition: int) -> asyncio.Future[None]:
        """Forget a user (erasure): drop the value and write a tombstone (None) to the
        changelog, so a table restored from it does not have them either."""
        return await self.erase_many([(user, partition)])

    async def erase_many(self, users: Sequence[tuple[str, int]]) -> asyncio.Future[None]:
        """`erase` for many (user, partition) at once: one changelog batch, one future."""
        if self.changelog_writer is None:
            raise RuntimeError("the history table's changelog writer is not set up")
        records = []
        for user, partition in users:
            self.data.pop(user, None)
            records.append((partition, self.changelog_key(user), None))
        return await self.changelog_writer.send(records)

    def users(self) -> list[str]:
        return list(self.data.keys())


def history_table(app: faust.App, settings: Settings) -> UserHistoryTable:
    table = UserHistoryTable(
        app, name=TABLE_NAME, beacon=app.beacon, default=None,
        partitions=settings.topic_partitions,
        key_type=str, value_type=bytes,  # keys JSON-encoded, values raw (state.py encodes)
        help="Per-user bounded history and dedupe memory (recsys.userstate.UserState).",
    )
    app.tables.add(table)
    return table
