"""Filter parsing (422 material: the parameter named) and semantics, item by item."""

from __future__ import annotations

import pytest

from recsys.catalog_codec import decode_facets, decode_item, encode_facets, encode_item
from recsys.item_attributes import ItemAttributes, attribute_text
from recsys.item_filter import (
    NO_FILTER,
    InvalidFilter,
    ItemFilter,
    check_indexed,
    parse_filter,
)

PAN = ItemAttributes("pan", category_paths=(("home", "kitchen", "pans"), ("sale",)),
                     brand="Acme", price=19.5, title="Pan", description="Cast iron.",
                     tags=("new", "iron"), attributes={"diameter": 28, "induction": True,
                                                       "colour": "black", "weight": 2.5},
                     image_url="https://img.example/pan.jpg")


def test_parse_reads_every_parameter_and_ignores_others():
    f = parse_filter([("k", "5"), ("category", "a"), ("category", "b"),
                      ("category_path", "home/kitchen"), ("brand", "Acme"),
                      ("price_min", "1.5"), ("price_max", "20"), ("available", "false"),
                      ("tag", "new"), ("attr", "colour:black"), ("attr", "note:a:b")])
    assert f == ItemFilter(categories=("a", "b"), category_paths=(("home", "kitchen"),),
                           brands=("Acme",), price_min=1.5, price_max=20.0, available=False,
                           tags=("new",), attributes=(("colour", "black"), ("note", "a:b")))
    assert parse_filter([("k", "5")]) == NO_FILTER and not NO_FILTER.restricts


@pytest.mark.parametrize("pairs, param", [
    ([("price_min", "3"), ("price_max", "2")], "price_min"),
    ([("price_min", "cheap")], "price_min"),
    ([("price_max", "inf")], "price_max"),
    ([("price_max", "-0.5")], "price_max"),
    ([("price_max", "1"), ("price_max", "2")], "price_max"),
    ([("available", "perhaps")], "available"),
    ([("attr", "nocolon")], "attr"),
    ([("attr", ":value")], "attr"),
    ([("category_path", "a//b")], "category_path"),
    ([("category_path", "/".join("x" * 13))], "category_path"),
    ([("category", "")], "category"),
    ([("brand", "a\x00")], "brand"),
    ([("tag", "t")] * 33, "tag"),
])
def test_bad_filters_name_their_parameter(pairs, param):
    with pytest.raises(InvalidFilter) as info:
        parse_filter(pairs)
    assert info.value.param == param and str(info.value).startswith(f"{param}: ")


@pytest.mark.parametrize("f, passes", [
    (ItemFilter(categories=("kitchen",)), True),       # a level of a path
    (ItemFilter(categories=("sale", "toys")), True),   # any one of several
    (ItemFilter(categories=("toys",)), False),
    (ItemFilter(category_paths=(("home", "kitchen"),)), True),
    (ItemFilter(category_paths=(("kitchen",),)), False),  # a prefix starts at the root
    (ItemFilter(categories=("toys",), category_paths=(("sale",),)), True),
    (ItemFilter(brands=("Zeta", "Acme")), True),
    (ItemFilter(brands=("acme",)), False),
    (ItemFilter(price_min=19.5, price_max=19.5), True),
    (ItemFilter(price_max=19.49), False),
    (ItemFilter(tags=("new", "iron")), True),
    (ItemFilter(tags=("new", "steel")), False),
    (ItemFilter(attributes=(("diameter", "28"), ("induction", "true"))), True),
    (ItemFilter(attributes=(("weight", "2.5"),)), True),
    (ItemFilter(attributes=(("colour", "red"),)), False),
    (ItemFilter(attributes=(("size", "1"),)), False),
    (ItemFilter(brands=("Acme",), tags=("steel",)), False),  # AND
    (ItemFilter(available=False), False),
])
def test_matches(f, passes):
    assert f.matches(PAN) is passes


def test_unknown_items_pass_only_availability_filters():
    assert ItemFilter().matches(None) and not ItemFilter(brands=("Acme",)).matches(None)
    assert ItemFilter(available=False).matches(None, available=False)
    assert not ItemFilter(price_max=10).matches(ItemAttributes("x"))


def test_attribute_text():
    assert [attribute_text(v) for v in (True, 1995, 1995.0, 2.5, "Red")] == [
        "true", "1995", "1995", "2.5", "Red"]


def test_filter_keys_are_canonical():
    a = parse_filter([("brand", "x"), ("brand", "y"), ("tag", "t")])
    b = parse_filter([("tag", "t"), ("brand", "y"), ("brand", "x")])
    assert a.key == b.key and a.key != parse_filter([("brand", "x")]).key


def test_codec_round_trips_every_field_and_reads_old_hashes():
    assert decode_item("pan", encode_item(PAN)) == PAN
    raw = {k.encode(): v.encode() for k, v in encode_item(PAN).items()}
    assert decode_item("pan", raw) == PAN
    facets = decode_facets("pan", encode_facets(PAN))
    assert facets == ItemAttributes("pan", category_paths=PAN.category_paths, brand="Acme",
                                    price=19.5, tags=PAN.tags, attributes=PAN.attributes)
    # A hash written before paths, brand and tags existed; bad numbers and JSON dropped.
    old = {b"name": b"Shoe", b"category": b"shoes", b"price": b"oops", b"available": b"0",
           b"attributes": b"{not json"}
    assert decode_item("s", old) == ItemAttributes("s", category_paths=(("shoes",),),
                                                   title="Shoe", available=False)
    assert decode_facets("s", None, "shoes").category_paths == (("shoes",),)


def test_only_indexed_attributes_may_be_filtered():
    f = ItemFilter(attributes=(("colour", "red"),))
    assert check_indexed(f, ("*",)) is f and check_indexed(f, ("colour", "size")) is f
    with pytest.raises(InvalidFilter) as info:
        check_indexed(f, ("size",))
    assert info.value.param == "attr" and "'colour'" in str(info.value)
