"""The catalogue hash of an item (`Keys.item`) read as ItemAttributes, for the content model
(the trainer's fit and the API's new-item cold start read it alike).

The one place that reads the hash layout for the content model: the fields the API's
PUT /v1/items writes (name, category, price, available, attributes JSON). When the catalogue
encoding moves into the core it replaces this function.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import orjson

from recsys.item_attributes import AttributeValue, InvalidItemAttributes, ItemAttributes

log = logging.getLogger(__name__)


def attributes_from_hash(item_id: str, raw: dict[Any, Any] | None) -> ItemAttributes | None:
    """ItemAttributes of one catalogue hash; None when it is empty or breaks a bound
    (logged: the item is left out of the content model, nothing else)."""
    if not raw:
        return None
    text = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes)
                                                           else v) for k, v in raw.items()}
    price = None
    if text.get("price") not in (None, ""):
        with contextlib.suppress(ValueError):
            price = float(text["price"])
    attributes: dict[str, AttributeValue] = {}
    if text.get("attributes"):
        with contextlib.suppress(orjson.JSONDecodeError):
            decoded = orjson.loads(text["attributes"])
            if isinstance(decoded, dict):
                attributes = {str(k): v for k, v in decoded.items()
                              if isinstance(v, str | bool | int | float)}
    category = text.get("category") or None
    try:
        return ItemAttributes(
            item_id=item_id, title=text.get("name") or None, price=price,
            category_paths=((category,),) if category else (),
            attributes=attributes,
            available=text.get("available", "1") not in ("0", "false", "False")).validate()
    except InvalidItemAttributes as exc:
        log.warning("catalogue item %r left out of the content model: %s", item_id, exc)
        return None


def has_features(item: ItemAttributes | None) -> bool:
    """Whether the item says anything a feature can be made of."""
    return item is not None and bool(item.title or item.category_paths or item.brand
                                     or item.price is not None or item.tags
                                     or item.description or item.attributes)
