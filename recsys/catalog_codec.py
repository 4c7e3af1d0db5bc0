"""The catalogue in Redis: one encoding of an item, used by every writer (the API's PUT, the
`recsys items load` command) and every reader (serving, the trainer's content model).

Per item, three places, always written together by `write_items_commands`:

    {ns}:item:{item}        hash   the whole item (`encode_item`): name, image_url, category,
                                   category_paths, brand, price, description, tags,
                                   attributes, available
    {ns}:catalog:category   hash   item -> category (leaf of the primary path, '' if none):
                                   membership of the catalogue
    {ns}:catalog:facets     hash   item -> the fields filters read (`encode_facets`): what an
                                   API process keeps in memory for every item, without texts
    {ns}:catalog:unavailable set   items that must not be recommended
    {ns}:catalog:changes    zset   item -> time of its last write (the API's new-item
                                   cold start maps changed items in)

Hashes written before the catalogue had paths, brand, tags and description decode as before:
`category` alone is a one-level path; an item without facets is filtered by that path only.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import orjson

from recsys.item_attributes import ItemAttributes
from recsys.keys import CATALOG_CHANGES_MAX, Keys

TEXT_FIELDS = ("name", "image_url", "category", "brand", "description")


def _text(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes)
                                                          else v)
            for k, v in raw.items()}


def _json(text: str | None, kind: type) -> Any:
    if not text:
        return kind()
    with contextlib.suppress(orjson.JSONDecodeError):
        value = orjson.loads(text)
        if isinstance(value, kind):
            return value
    return kind()


def _paths(value: Any) -> tuple[tuple[str, ...], ...]:
    """JSON paths -> tuples; entries that are not lists of text are dropped."""
    out = []
    for path in value if isinstance(value, list) else []:
        if isinstance(path, list) and path and all(isinstance(p, str) and p for p in path):
            out.append(tuple(path))
    return tuple(out)


def _attributes(value: Any) -> dict[str, Any]:
    """Attribute values of a supported type (text, number, boolean); others dropped."""
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, str | bool | int | float)}


def encode_item(item: ItemAttributes) -> dict[str, str]:
    """The item hash's fields (text). Absent optional fields are not written."""
    out = {"available": "1" if item.available else "0",
           "attributes": orjson.dumps(dict(item.attributes)).decode()}
    texts = {"name": item.title, "image_url": item.image_url, "category": item.category,
             "brand": item.brand, "description": item.description}
    out.update({name: value for name, value in texts.items() if value is not None})
    if item.category_paths:
        out["category_paths"] = orjson.dumps([list(p) for p in item.category_paths]).decode()
    if item.tags:
        out["tags"] = orjson.dumps(list(item.tags)).decode()
    if item.price is not None:
        out["price"] = repr(float(item.price))
    return out


def decode_item(item_id: str, raw: Mapping[Any, Any]) -> ItemAttributes:
    """Item hash -> ItemAttributes; tolerant of old and hand-written hashes (unreadable
    numbers and JSON are dropped, not fatal)."""
    text = _text(raw)
    paths = _paths(_json(text.get("category_paths"), list))
    if not paths and text.get("category"):
        paths = ((text["category"],),)
    price = None
    if text.get("price"):
        with contextlib.suppress(ValueError):
            price = float(text["price"])
    tags = tuple(t for t in _json(text.get("tags"), list) if isinstance(t, str))
    return ItemAttributes(
        item_id, category_paths=paths, brand=text.get("brand") or None, price=price,
        title=text.get("name") or None, description=text.get("description") or None,
        tags=tags, attributes=_attributes(_json(text.get("attributes"), dict)),
        available=text.get("available", "1") not in ("0", "false", "False"),
        image_url=text.get("image_url") or None)


def item_fields(item: ItemAttributes) -> dict[str, Any]:
    """The API's shape of a catalogue item (without its id): every field, null when not set.
    `name` is the title; `category` the leaf of the primary path."""
    return {"name": item.title, "image_url": item.image_url, "category": item.category,
            "category_paths": [list(p) for p in item.category_paths], "brand": item.brand,
            "price": item.price, "description": item.description, "tags": list(item.tags),
            "available": item.available, "attributes": dict(item.attributes)}


def display_fields(item: ItemAttributes) -> dict[str, Any]:
    """The compact fields a recommendation entry carries: those set, without description."""
    out: dict[str, Any] = {}
    for name, value in (("name", item.title), ("image_url", item.image_url),
                        ("category", item.category), ("brand", item.brand),
                        ("price", item.price)):
        if value is not None:
            out[name] = value
    out["available"] = item.available
    out["attributes"] = dict(item.attributes)
    return out


def encode_facets(item: ItemAttributes) -> bytes:
    """The fields filters read, as compact JSON (short keys: one per catalogue item is held
    in every API process's memory)."""
    facets: dict[str, Any] = {}
    if item.category_paths:
        facets["p"] = [list(p) for p in item.category_paths]
    if item.brand is not None:
        facets["b"] = item.brand
    if item.price is not None:
        facets["r"] = float(item.price)
    if item.tags:
        facets["t"] = list(item.tags)
    if item.attributes:
        facets["a"] = dict(item.attributes)
    return orjson.dumps(facets)


def decode_facets(item_id: str, raw: bytes | str | None, category: str = "",
                  available: bool = True) -> ItemAttributes:
    """`encode_facets` -> ItemAttributes without texts; an item with no (readable) facets
    has its `category` as a one-level path."""
    facets = _json(raw.decode() if isinstance(raw, bytes) else raw, dict)
    paths = _paths(facets.get("p"))
    if not paths and category:
        paths = ((category,),)
    price = facets.get("r")
    brand = facets.get("b")
    attributes = _attributes(facets.get("a"))
    return ItemAttributes(
        item_id, category_paths=paths,
        brand=brand if isinstance(brand, str) else None,
        price=float(price) if isinstance(price, int | float) else None,
        tags=tuple(t for t in facets.get("t") or () if isinstance(t, str)),
        attributes=attributes, available=available)


def write_items_commands(pipe: Any, keys: Keys, items: Iterable[ItemAttributes],
                         now_ms: int | None = None) -> None:
    """Queue on `pipe` (sync or async) the commands that store items, each replacing its
    previous version, and log them in `keys.catalog_changes` (what the API's new-item cold
    start maps in; the newest CATALOG_CHANGES_MAX kept). The caller bumps
    `keys.catalog_generation` once after its last batch (`bump_generation`), so API
    processes reload once."""
    items = list(items)
    if not items:
        return
    stamp = int(time.time() * 1000) if now_ms is None else now_ms
    for item in items:
        key = keys.item(item.item_id)
        pipe.delete(key)
        pipe.hset(key, mapping=encode_item(item))
        pipe.hset(keys.catalog_category, item.item_id, item.category or "")
        pipe.hset(keys.catalog_facets, item.item_id, encode_facets(item))
        if item.available:
            pipe.srem(keys.catalog_unavailable, item.item_id)
        else:
            pipe.sadd(keys.catalog_unavailable, item.item_id)
    pipe.zadd(keys.catalog_changes, {item.item_id: stamp for item in items})
    pipe.zremrangebyrank(keys.catalog_changes, 0, -CATALOG_CHANGES_MAX - 1)


def bump_generation(pipe: Any, keys: Keys) -> None:
    pipe.incr(keys.catalog_generation)


def write_items(client: Any, keys: Keys, items: Sequence[ItemAttributes], batch_size: int,
                on_batch: Callable[[int], None] | None = None) -> int:
    """Store validated items with a synchronous Redis client, `batch_size` per MULTI/EXEC,
    then bump the generation once (API processes reload once). Replaces each item; items not
    given stay. Returns the generation. Redis errors propagate: the batches before stay
    written, and writing the same items again is idempotent."""
    for start in range(0, len(items), batch_size):
        batch = items[start:start + batch_size]
        pipe = client.pipeline(transaction=True)
        write_items_commands(pipe, keys, batch)
        pipe.execute()
        if on_batch is not None:
            on_batch(len(batch))
    pipe = client.pipeline(transaction=True)
    bump_generation(pipe, keys)
    return int(pipe.execute()[-1])
