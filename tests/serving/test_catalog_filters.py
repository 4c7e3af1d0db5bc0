"""The catalogue's in-memory filter indexes select exactly the items ItemFilter.matches
passes (pure: no Redis)."""

from __future__ import annotations

import random

from recsys.item_attributes import ItemAttributes
from recsys.item_filter import ItemFilter
from serving.catalog import FacetIndex


def random_items(rng: random.Random, n: int) -> list[ItemAttributes]:
    out = []
    for i in range(n):
        paths = tuple(tuple(rng.choice("abc") for _ in range(rng.randint(1, 3)))
                      for _ in range(rng.randint(0, 2)))
        out.append(ItemAttributes(
            f"i{i}", category_paths=paths, brand=rng.choice([None, "x", "y"]),
            price=rng.choice([None, 1.0, 5.0, 9.5]),
            tags=tuple(rng.sample(["t1", "t2", "t3"], rng.randint(0, 2))),
            attributes={"colour": rng.choice(["red", "blue"]), "n": rng.randint(1, 3)}
            if rng.random() < 0.7 else {}))
    return out


FILTERS = [ItemFilter(categories=("a",)), ItemFilter(categories=("b", "c")),
           ItemFilter(category_paths=(("a", "b"),)),
           ItemFilter(categories=("c",), category_paths=(("a",),)),
           ItemFilter(brands=("x",)), ItemFilter(price_min=2.0),
           ItemFilter(price_max=5.0, brands=("y",)), ItemFilter(tags=("t1", "t2")),
           ItemFilter(attributes=(("colour", "red"), ("n", "2"))),
           ItemFilter(categories=("a",), tags=("t3",), price_min=1.0, price_max=9.0)]


def test_indexes_select_what_matches_passes_after_adds_and_removes():
    rng = random.Random(3)
    index = FacetIndex()
    items = random_items(rng, 300)
    for item in items:
        index.add(item)
    # Replace some, remove others: the indexes must forget the old facets.
    current = {item.item_id: item for item in items}
    for item in random_items(random.Random(4), 100):
        index.add(item)
        current[item.item_id] = item
    for item_id in [f"i{n}" for n in range(200, 260)]:
        index.remove(item_id)
        del current[item_id]
    for f in FILTERS:
        expected = {i for i, item in current.items() if f.matches(item)}
        assert index.matching(f) == expected, f
        assert 0 < len(expected) < len(current), f  # each filter selects a real subset


def test_an_index_of_some_attributes_keeps_only_those():
    index = FacetIndex(("colour",))
    index.add(ItemAttributes("a", attributes={"colour": "red", "hash1": "n1 2", "n": 3}))
    assert dict(index.facets["a"].attributes) == {"colour": "red"}
    assert set(index.by_attribute) == {("colour", "red")}
    assert index.matching(ItemFilter(attributes=(("colour", "red"),))) == {"a"}
