"""The catalogue hash of an item (`Keys.item`) read as ItemAttributes, for the content model
(the trainer's fit and the API's new-item cold start read it alike).

The hash layout is recsys.catalog_codec's (every field the API's PUT /v1/items and
`recsys items load` write: paths, brand, description, tags included).
"""

from __future__ import annotations

import logging
from typing import Any

from recsys.catalog_codec import decode_item
from recsys.item_attributes import InvalidItemAttributes, ItemAttributes

log = logging.getLogger(__name__)


def attributes_from_hash(item_id: str, raw: dict[Any, Any] | None) -> ItemAttributes | None:
    """ItemAttributes of one catalogue hash (recsys.catalog_codec.decode_item); None when it
    is empty or breaks a bound (logged: the item is left out of the content model, nothing
    else)."""
    if not raw:
        return None
    try:
        return decode_item(item_id, raw).validate()
    except InvalidItemAttributes as exc:
        log.warning("catalogue item %r left out of the content model: %s", item_id, exc)
        return None


def has_features(item: ItemAttributes | None) -> bool:
    """Whether the item says anything a feature can be made of."""
    return item is not None and bool(item.title or item.category_paths or item.brand
                                     or item.price is not None or item.tags
                                     or item.description or item.attributes)
