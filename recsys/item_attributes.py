"""Item attributes: the one shape in which the catalogue, the loaders of item files, the
content model and the business rules see what an item is.

Every loader (MovieLens `u.item` / `movies.dat`, Retailrocket `item_properties`, a generic
items CSV) produces `ItemAttributes`; the catalogue stores them; the trainer's content model
and the serving filters read them. Bounds are checked here, once, so that a huge text or a
malformed category path is refused with the field named, wherever it came from.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from recsys.errors import RecsysError
from recsys.events import MAX_ID_LENGTH

# Bounds a single item may not exceed (no setting can allow more: they bound memory per item).
MAX_CATEGORY_PATHS = 16
MAX_CATEGORY_DEPTH = 12
MAX_TITLE_LENGTH = 512
MAX_DESCRIPTION_LENGTH = 10_000
MAX_TAGS = 64
MAX_ATTRIBUTES = 64
MAX_ATTRIBUTE_NAME_LENGTH = 128
MAX_ATTRIBUTE_TEXT_LENGTH = 1_000
MAX_PRICE = 1e12
MAX_IMAGE_URL_LENGTH = 2048

AttributeValue = str | bool | int | float


class InvalidItemAttributes(RecsysError, ValueError):
    """An item's attributes break a rule; `field` names the offending field."""

    def __init__(self, item_id: str, field_name: str, reason: str) -> None:
        super().__init__(f"item {item_id!r}: {field_name}: {reason}")
        self.item_id = item_id
        self.field = field_name
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ItemAttributes:
    """What the shop says about one item. Every field but the id is optional.

    `category_paths` holds each category the item is in as a path from the root to the leaf
    (an item may sit in several; the first is its primary category, whose leaf is the
    catalogue's `category`). `attributes` carries everything else, by name (colour, release
    year, margin...). `title` is the catalogue's display `name`; `image_url` is for display
    only."""

    item_id: str
    category_paths: tuple[tuple[str, ...], ...] = ()
    brand: str | None = None
    price: float | None = None
    title: str | None = None
    description: str | None = None
    tags: tuple[str, ...] = ()
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)
    available: bool = True
    image_url: str | None = None

    @property
    def category(self) -> str | None:
        """The leaf of the primary category path."""
        return self.category_paths[0][-1] if self.category_paths else None

    def ancestors(self) -> set[str]:
        """Every category on every path, each level written as its path prefix ("a/b")
        so that equal names under different parents stay distinct."""
        return {"/".join(path[: depth + 1]) for path in self.category_paths
                for depth in range(len(path))}

    def validate(self) -> ItemAttributes:
        """Check every bound; raises InvalidItemAttributes naming the field. Returns self."""
        def fail(name: str, reason: str) -> None:
            raise InvalidItemAttributes(str(self.item_id)[:MAX_ID_LENGTH], name, reason)

        _check_id(self.item_id, "item_id", fail)
        if len(self.category_paths) > MAX_CATEGORY_PATHS:
            fail("category_paths", f"more than {MAX_CATEGORY_PATHS} paths")
        for index, path in enumerate(self.category_paths):
            if not path:
                fail(f"category_paths[{index}]", "an empty path")
            if len(path) > MAX_CATEGORY_DEPTH:
                fail(f"category_paths[{index}]", f"deeper than {MAX_CATEGORY_DEPTH} levels")
            for level in path:
                _check_id(level, f"category_paths[{index}]", fail)
        if self.brand is not None:
            _check_id(self.brand, "brand", fail)
        if self.price is not None and not (
                isinstance(self.price, int | float) and math.isfinite(self.price)
                and 0 <= self.price <= MAX_PRICE):
            fail("price", f"not a number between 0 and {MAX_PRICE:g}")
        _check_text(self.title, "title", MAX_TITLE_LENGTH, fail)
        _check_text(self.description, "description", MAX_DESCRIPTION_LENGTH, fail)
        _check_text(self.image_url, "image_url", MAX_IMAGE_URL_LENGTH, fail)
        if len(self.tags) > MAX_TAGS:
            fail("tags", f"more than {MAX_TAGS} tags")
        for tag in self.tags:
            _check_id(tag, "tags", fail)
        if len(self.attributes) > MAX_ATTRIBUTES:
            fail("attributes", f"more than {MAX_ATTRIBUTES} attributes")
        for name, value in self.attributes.items():
            if not isinstance(name, str) or not 0 < len(name) <= MAX_ATTRIBUTE_NAME_LENGTH:
                fail("attributes", f"a name must be 1-{MAX_ATTRIBUTE_NAME_LENGTH} characters")
            if isinstance(value, str):
                _check_text(value, f"attributes.{name}", MAX_ATTRIBUTE_TEXT_LENGTH, fail)
            elif isinstance(value, float) and not math.isfinite(value):
                fail(f"attributes.{name}", "not a finite number")
            elif not isinstance(value, bool | int | float):
                fail(f"attributes.{name}", f"unsupported type {type(value).__name__}")
        return self


def attribute_text(value: AttributeValue) -> str:
    """An attribute value as the text a filter compares it with: `true`/`false`, integers
    without a fraction (1995 and 1995.0 are both "1995"), other numbers as Python writes
    them, text as it is."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _check_id(value: object, name: str, fail) -> None:  # noqa: ANN001 - local callback
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_ID_LENGTH:
        fail(name, f"must be 1-{MAX_ID_LENGTH} visible characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        fail(name, "contains control characters")


def _check_text(value: object, name: str, limit: int, fail) -> None:  # noqa: ANN001
    if value is None:
        return
    if not isinstance(value, str):
        fail(name, "must be text")
    if len(value) > limit:
        fail(name, f"longer than {limit} characters ({len(value)})")
    if any(ord(c) < 0x20 and c not in "\t\n\r" or ord(c) == 0x7F for c in value):
        fail(name, "contains control characters")
