"""Erasure of a user (right to be forgotten) and removal of an item, across every store.

A user is erased by

1. deleting their Redis state at once (`erase_user` / `aerase_user`): their vector in every
   version's user-vector hash, their seen set; and adding them to the trainer's pending
   erasure set (`{ns}:erasure:users`);
2. an `erase` control record on the interactions topic, keyed by the user, so it lands on
   their partition *after* every event of theirs sent before it:
       {"control": "erase", "user_id": "...", "requested_at": <epoch ms>}
   - the stream worker tombstones the user's table entry (a None value in the changelog:
     a restored table no longer has them) and deletes their Redis state again (a batch in
     flight may have rewritten it);
   - the trainer's consumer drops the user's buffered rows and rewrites the history files
     that hold them (trainer.history.HistoryStore.erase);
3. the trainer also applies the pending erasure set before each run (a trainer that does not
   consume, `--no-consume`), then removes the users it applied from the set.

Events of the user that arrive after the erasure are new data and are kept.

An item is removed by deleting its catalogue entry, marking it unavailable (serving never
recommends unavailable items), removing it from the trending and all-time popularity sets,
and adding it to `{ns}:erasure:items`, which the trainer drops from every training set (the
set is kept: a retrain never brings the item back; a later PUT of the item re-creates it).
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from recsys.keys import POPULARITY_WINDOWS, Keys

CONTROL_ERASE = "erase"
_CONTROL_MARK = b'"control"'


def erase_control_record(user_id: str, requested_ms: int | None = None) -> tuple[bytes, bytes]:
    """(key, value) of the control record that erases `user_id` downstream."""
    requested_ms = int(time.time() * 1000) if requested_ms is None else requested_ms
    value = orjson.dumps({"control": CONTROL_ERASE, "user_id": user_id,
                          "requested_at": requested_ms})
    return user_id.encode("utf-8"), value


def erased_user(value: bytes | None) -> str | None:
    """The user an erase control record names; None for anything else (cheap for events:
    only values that mention "control" are parsed)."""
    if not value or _CONTROL_MARK not in value[:64]:
        return None
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or data.get("control") != CONTROL_ERASE:
        return None
    user = data.get("user_id")
    return user if isinstance(user, str) and user else None


def _user_vector_keys(redis: Any, keys: Keys, user_id: str) -> list[bytes]:
    return list(redis.scan_iter(match=keys.user_vector_pattern(user_id), count=1000))


def _forget_in_item_users(pipe: Any, keys: Keys, user_id: str, items: list[Any]) -> Any:
    """Queue the user's removal from the recent-user lists of the item fold-in (the items of
    their seen set: the ones whose lists can hold them)."""
    for item in items:
        item_id = item.decode() if isinstance(item, bytes) else str(item)
        pipe.zrem(keys.item_users(item_id), user_id)
        pipe.hdel(keys.item_confidences(item_id), user_id)
    return pipe


def erase_user(redis: Any, keys: Keys, user_id: str, for_trainer: bool = True) -> int:
    """Synchronous client: delete the user's Redis state; returns how many fields/keys went."""
    _forget_in_item_users(redis.pipeline(transaction=False), keys, user_id,
                          redis.zrange(keys.seen(user_id), 0, -1)).execute()
    pipe = redis.pipeline(transaction=False)
    for key in _user_vector_keys(redis, keys, user_id):
        pipe.hdel(key, user_id)
    pipe.delete(keys.seen(user_id))
    pipe.delete(keys.hidden(user_id))
    if for_trainer:
        pipe.sadd(keys.erasure_users, user_id)
    results = pipe.execute()
    return int(sum(results[:-1] if for_trainer else results))


async def aerase_user(redis: Any, keys: Keys, user_id: str, for_trainer: bool = True) -> int:
    """redis.asyncio client: as erase_user."""
    vector_keys = [key async for key in redis.scan_iter(
        match=keys.user_vector_pattern(user_id), count=1000)]
    await _forget_in_item_users(redis.pipeline(transaction=False), keys, user_id,
                                await redis.zrange(keys.seen(user_id), 0, -1)).execute()
    pipe = redis.pipeline(transaction=False)
    for key in vector_keys:
        pipe.hdel(key, user_id)
    pipe.delete(keys.seen(user_id))
    pipe.delete(keys.hidden(user_id))
    if for_trainer:
        pipe.sadd(keys.erasure_users, user_id)
    results = await pipe.execute()
    return int(sum(results[:-1] if for_trainer else results))


def remove_item_commands(pipe: Any, keys: Keys, item_id: str, versions: list[str]) -> None:
    """Queue on `pipe` (sync or async) every command that removes an item."""
    pipe.delete(keys.item(item_id))
    pipe.hdel(keys.catalog_category, item_id)
    pipe.hdel(keys.catalog_facets, item_id)
    pipe.sadd(keys.catalog_unavailable, item_id)
    pipe.sadd(keys.erasure_items, item_id)
    for window in POPULARITY_WINDOWS:
        pipe.zrem(keys.popularity(window), item_id)
    pipe.delete(keys.item_users(item_id), keys.item_confidences(item_id))
    for version in versions:
        pipe.zrem(keys.popularity_alltime(version), item_id)
        # The stream's item fold-in: the vector goes; serving already hides the item
        # (unavailable) and drops it at its next model load.
        pipe.hdel(keys.item_vectors(version), item_id)
    pipe.incr(keys.catalog_generation)
