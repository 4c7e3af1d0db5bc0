"""Filters on recommendation lists: which catalogue items a list may hold.

Query parameters (each list endpoint takes them; all given clauses must hold, AND):

    category=C          repeatable: the item is in category C or below it (C is on one of
                        its category paths)
    category_path=A/B   repeatable: one of the item's paths starts with A/B (root first)
                        (category and category_path values together: any one suffices)
    brand=B             repeatable: the item's brand is one of them
    price_min, price_max  the item has a price within [price_min, price_max]
    available=false     only items the catalogue marks unavailable (default true: only
                        available items, as every list always was)
    tag=T               repeatable: the item has every tag given
    attr=NAME:VALUE     repeatable: attribute NAME equals VALUE (compared as text,
                        `recsys.item_attributes.attribute_text`)

`parse_filter` turns the query's (name, value) pairs into an `ItemFilter`, or raises
InvalidFilter naming the parameter; `ItemFilter.matches` is the semantics, item by item.
Serving computes the same sets from its in-memory indexes (serving.catalog), tested equal.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from recsys.errors import RecsysError
from recsys.events import MAX_ID_LENGTH
from recsys.item_attributes import (
    MAX_ATTRIBUTE_NAME_LENGTH,
    MAX_ATTRIBUTE_TEXT_LENGTH,
    MAX_CATEGORY_DEPTH,
    MAX_PRICE,
    ItemAttributes,
    attribute_text,
)

FILTER_PARAMS = ("category", "category_path", "brand", "price_min", "price_max", "available",
                 "tag", "attr")
# Values of one repeatable parameter in one request (a request is not a catalogue query).
MAX_FILTER_VALUES = 32
PATH_SEPARATOR = "/"
_BOOLS = {"true": True, "1": True, "false": False, "0": False}


class InvalidFilter(RecsysError, ValueError):
    """A filter parameter is malformed; `param` names it."""

    def __init__(self, param: str, reason: str) -> None:
        super().__init__(f"{param}: {reason}")
        self.param = param
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ItemFilter:
    categories: tuple[str, ...] = ()
    category_paths: tuple[tuple[str, ...], ...] = ()
    brands: tuple[str, ...] = ()
    price_min: float | None = None
    price_max: float | None = None
    available: bool = True
    tags: tuple[str, ...] = ()
    attributes: tuple[tuple[str, str], ...] = ()

    @property
    def restricts(self) -> bool:
        """Whether it says more than the default (available items, any of them)."""
        return self != NO_FILTER

    @property
    def has_category(self) -> bool:
        return bool(self.categories or self.category_paths)

    @property
    def key(self) -> str:
        """A canonical text of the filter: equal filters, equal keys (memo key)."""
        parts = [",".join(sorted(self.categories)),
                 ",".join(sorted(PATH_SEPARATOR.join(p) for p in self.category_paths)),
                 ",".join(sorted(self.brands)), repr(self.price_min), repr(self.price_max),
                 str(self.available), ",".join(sorted(self.tags)),
                 ",".join(sorted(f"{n}:{v}" for n, v in self.attributes))]
        return "\x1f".join(parts)

    def matches(self, item: ItemAttributes | None, available: bool = True) -> bool:
        """Whether the item passes. An item the catalogue does not know (None) passes only
        the default filter, or `category` clauses never; `available` is the catalogue's."""
        if available != self.available:
            return False
        if item is None:
            return not self.restricts_content
        if self.has_category:
            levels = {level for path in item.category_paths for level in path}
            in_category = any(c in levels for c in self.categories) or any(
                path[:len(prefix)] == prefix
                for prefix in self.category_paths for path in item.category_paths)
            if not in_category:
                return False
        if self.brands and item.brand not in self.brands:
            return False
        if self.price_min is not None or self.price_max is not None:
            if item.price is None:
                return False
            if self.price_min is not None and item.price < self.price_min:
                return False
            if self.price_max is not None and item.price > self.price_max:
                return False
        if self.tags and not set(self.tags) <= set(item.tags):
            return False
        for name, value in self.attributes:
            if name not in item.attributes or attribute_text(item.attributes[name]) != value:
                return False
        return True

    @property
    def restricts_content(self) -> bool:
        """Whether any clause reads the item's attributes (not only its availability)."""
        return bool(self.has_category or self.brands or self.tags or self.attributes
                    or self.price_min is not None or self.price_max is not None)


NO_FILTER = ItemFilter()
# `indexed` of `check_indexed`: every attribute.
ALL_ATTRIBUTES = "*"


def check_indexed(f: ItemFilter, indexed: Iterable[str]) -> ItemFilter:
    """The filter, when each attribute it names is one serving indexes (the setting
    api_filter_attributes; `*` is every one); else InvalidFilter naming `attr`."""
    names = set(indexed)
    if ALL_ATTRIBUTES in names:
        return f
    for name, _ in f.attributes:
        if name not in names:
            raise InvalidFilter("attr", f"attribute {name!r} is not filterable here (the "
                                f"setting api_filter_attributes lists {sorted(names)})")
    return f


def category_filter(category: str | None) -> ItemFilter:
    """The filter of the single `category` parameter the API always had."""
    return ItemFilter(categories=(category,)) if category else NO_FILTER


def _id(param: str, value: str) -> str:
    if len(value) > MAX_ID_LENGTH:
        raise InvalidFilter(param, f"at most {MAX_ID_LENGTH} characters; got {len(value)}")
    if not value.strip():
        raise InvalidFilter(param, "needs a visible character")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise InvalidFilter(param, "contains control characters")
    return value


def _price(param: str, value: str) -> float:
    try:
        price = float(value)
    except ValueError:
        raise InvalidFilter(param, f"not a number: {value[:40]!r}") from None
    if not math.isfinite(price) or not 0 <= price <= MAX_PRICE:
        raise InvalidFilter(param, f"must be a number between 0 and {MAX_PRICE:g}")
    return price


def _path(value: str) -> tuple[str, ...]:
    levels = tuple(value.split(PATH_SEPARATOR))
    if len(levels) > MAX_CATEGORY_DEPTH or any(not level.strip() for level in levels):
        raise InvalidFilter("category_path", f"expected 1-{MAX_CATEGORY_DEPTH} non-empty "
                            f"levels separated by {PATH_SEPARATOR!r}, root first; got "
                            f"{value[:80]!r}")
    return levels


def _attribute(value: str) -> tuple[str, str]:
    name, sep, text = value.partition(":")
    if not sep or not name or len(name) > MAX_ATTRIBUTE_NAME_LENGTH:
        raise InvalidFilter("attr", f"expected NAME:VALUE (a name of 1-"
                            f"{MAX_ATTRIBUTE_NAME_LENGTH} characters); got {value[:80]!r}")
    if len(text) > MAX_ATTRIBUTE_TEXT_LENGTH:
        raise InvalidFilter("attr", f"value longer than {MAX_ATTRIBUTE_TEXT_LENGTH} characters")
    return name, text


def parse_filter(params: Iterable[tuple[str, str]]) -> ItemFilter:
    """An ItemFilter from query pairs; names outside FILTER_PARAMS are ignored (the caller
    owns them). Raises InvalidFilter naming the parameter."""
    values: dict[str, list[str]] = {}
    for name, value in params:
        if name in FILTER_PARAMS:
            values.setdefault(name, []).append(value)
    for name, given in values.items():
        if len(given) > MAX_FILTER_VALUES:
            raise InvalidFilter(name, f"at most {MAX_FILTER_VALUES} values")
    for name in ("price_min", "price_max", "available"):
        if len(values.get(name, ())) > 1:
            raise InvalidFilter(name, "given more than once")
    price_min = _price("price_min", values["price_min"][0]) if "price_min" in values else None
    price_max = _price("price_max", values["price_max"][0]) if "price_max" in values else None
    if price_min is not None and price_max is not None and price_min > price_max:
        raise InvalidFilter("price_min", f"greater than price_max ({price_min:g} > "
                            f"{price_max:g})")
    available = True
    if "available" in values:
        flag = _BOOLS.get(values["available"][0].lower())
        if flag is None:
            raise InvalidFilter("available", "expected true or false")
        available = flag
    for value in values.get("category_path", ()):
        _id("category_path", value)
    return ItemFilter(
        categories=tuple(dict.fromkeys(_id("category", v) for v in values.get("category", ()))),
        category_paths=tuple(dict.fromkeys(_path(v) for v in values.get("category_path", ()))),
        brands=tuple(dict.fromkeys(_id("brand", v) for v in values.get("brand", ()))),
        price_min=price_min, price_max=price_max, available=available,
        tags=tuple(dict.fromkeys(_id("tag", v) for v in values.get("tag", ()))),
        attributes=tuple(dict.fromkeys(_attribute(v) for v in values.get("attr", ()))))
