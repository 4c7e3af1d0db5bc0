"""The per-user history table: user id -> `stream.state.UserState` bytes.

Partitioned like the interactions topic, so a user's history lives with the partition that
carries their events and moves with it on a rebalance (restored from the changelog).

Faust sends a table write's changelog record to the partition of the event being processed
("current event"). A micro-batch holds many users from several partitions, so `put` names the
partition explicitly: the partition the user's own events came from.
"""

from __future__ import annotations

from typing import Any

import faust

from recsys.settings import Settings

TABLE_NAME = "user_history"


class UserHistoryTable(faust.Table):
    _pinned_partition: int | None = None

    def put(self, user: str, value: bytes, partition: int) -> None:
        """Write a value; its changelog record goes to `partition`."""
        self._pinned_partition = partition
        try:
            self[user] = value  # a new value object: the changelog sees every update
        finally:
            self._pinned_partition = None

    def partition_for_key(self, key: Any) -> int | None:
        if self._pinned_partition is not None:
            return self._pinned_partition
        return super().partition_for_key(key)

    def users(self) -> list[str]:
        return list(self.keys())


def history_table(app: faust.App, settings: Settings) -> UserHistoryTable:
    table = UserHistoryTable(
        app, name=TABLE_NAME, beacon=app.beacon, default=None,
        partitions=settings.topic_partitions,
        key_type=str, value_type=bytes,  # keys JSON-encoded, values raw (state.py encodes)
        help="Per-user bounded history and dedupe memory (stream.state.UserState).",
    )
    app.tables.add(table)
    return table
