"""Item-file loaders: Retailrocket item_properties and a generic items CSV -> ItemAttributes;
a bad file is refused whole, with the row and field named."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from recsys.item_attributes import ItemAttributes
from recsys.sources.items import (
    ITEM_FORMATS,
    ItemsFileError,
    category_paths_from_tree,
    load_items,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
RR = FIXTURES / "retailrocket_items"
SHARED_TREE = Path("/work/shared/data/retailrocket/category_tree.csv.gz")


def test_retailrocket_latest_value_per_property_wins_and_categories_become_paths():
    items = {i.item_id: i for i in load_items(f"retailrocket:{RR}")}
    assert set(items) == {"100", "101", "102"}
    # categoryid 2 then 3 (later): the path of 3 through the tree, root first.
    assert items["100"].category_paths == (("1", "2", "3"),)
    assert items["100"].category == "3"
    # The later row of part1 beats the older one in part2; values kept as text.
    assert items["100"].attributes == {"888": "1116713 960601 n277.200"}
    assert items["100"].available is True
    # available: 1 (older), 0 (latest) -> unavailable; 9 is a root.
    assert items["101"].available is False and items["101"].category_paths == (("9",),)
    assert items["102"].category_paths == () and items["102"].attributes == {"790": "n5400.000"}


def test_retailrocket_without_a_tree_keeps_one_level_categories(tmp_path):
    (tmp_path / "item_properties.csv").write_text(
        (RR / "item_properties_part1.csv").read_text())
    items = {i.item_id: i for i in load_items(f"retailrocket:{tmp_path / 'item_properties.csv'}")}
    assert items["100"].category_paths == (("3",),)


@pytest.mark.parametrize("body, row, field", [
    ("1,100,available,2\n", 2, "available"),
    ("x,100,categoryid,1\n", 2, "timestamp"),
    ("1,100,categoryid,1\n1,,categoryid,1\n", 3, "itemid"),
])
def test_retailrocket_bad_rows_name_row_and_field(tmp_path, body, row, field):
    (tmp_path / "item_properties.csv").write_text("timestamp,itemid,property,value\n" + body)
    with pytest.raises(ItemsFileError) as info:
        load_items(f"retailrocket:{tmp_path}")
    assert (info.value.row, info.value.field) == (row, field)
    assert f"row {row}" in str(info.value)


def test_category_tree_paths_and_cycles():
    import pandas as pd
    tree = pd.DataFrame({"categoryid": ["1", "2", "3"], "parentid": ["", "1", "2"]})
    assert category_paths_from_tree(tree) == {"1": ("1",), "2": ("1", "2"),
                                              "3": ("1", "2", "3")}
    cycle = pd.DataFrame({"categoryid": ["1", "2"], "parentid": ["2", "1"]})
    with pytest.raises(ItemsFileError, match="cycle"):
        category_paths_from_tree(cycle)


@pytest.mark.skipif(not SHARED_TREE.exists(), reason="the shared Retailrocket tree is absent")
def test_the_real_retailrocket_tree_gives_valid_paths():
    import pandas as pd
    with gzip.open(SHARED_TREE, "rt") as f:
        tree = pd.read_csv(f, dtype=str, keep_default_na=False)
    paths = category_paths_from_tree(tree)
    assert len(paths) == 1669
    roots = {p[0] for p in paths.values()}
    assert len(roots) == 25
    for category, path in paths.items():
        assert path[-1] == category
        ItemAttributes("x", category_paths=(path,)).validate()


MAPPING = ("item_id=sku,name=title,category=path,brand=maker,price=cost,tags=labels,"
           "description=text,image_url=img,available=stock")


def test_generic_csv_with_a_mapping():
    items = {i.item_id: i for i in load_items(f"csv:{FIXTURES / 'shop_items.csv'}",
                                              mapping=MAPPING)}
    assert items["p1"] == ItemAttributes(
        "p1", category_paths=(("home", "kitchen", "pans"), ("sale",)), brand="Acme",
        price=19.5, title="Cast iron pan", description="A pan, cast iron.",
        tags=("new", "iron"), attributes={"colour": "black", "size": "28"}, available=True,
        image_url="https://img.example/p1.jpg")
    assert items["p2"].available is False and items["p2"].attributes == {"colour": "white"}
    assert items["p3"].price is None and items["p3"].tags == ("new",)
    only = load_items(f"csv:{FIXTURES / 'shop_items.csv'}", mapping=MAPPING,
                      attributes=["size"])
    assert only[0].attributes == {"size": "28"}


@pytest.mark.parametrize("rows, row, field", [
    ("p1,1\n,2\n", 3, "item_id"),
    ("p1,abc\n", 2, "price"),
    ("p1,-5\n", 2, "price"),
    ("p1,1\np1,2\n", 3, "item_id"),
])
def test_generic_csv_bad_rows_name_row_and_field(tmp_path, rows, row, field):
    path = tmp_path / "items.csv"
    path.write_text("sku,cost\n" + rows)
    with pytest.raises(ItemsFileError) as info:
        load_items(f"csv:{path}", mapping="item_id=sku,price=cost")
    assert (info.value.row, info.value.field) == (row, field)


def test_identical_duplicates_count_once_and_bad_specs_are_refused(tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("sku,cost\np1,1\np1,1\n")
    assert len(load_items(f"csv:{path}", mapping="item_id=sku,price=cost")) == 1
    for spec, message in [("nope:x", "unknown items spec"), ("csv:", "give a path"),
                          (f"csv:{tmp_path / 'missing.csv'}", "not found")]:
        with pytest.raises(ItemsFileError, match=message):
            load_items(spec)
    with pytest.raises(ItemsFileError, match="unknown fields"):
        load_items(f"csv:{path}", mapping="sku=item_id")
    with pytest.raises(ItemsFileError, match="not in the file"):
        load_items(f"csv:{path}", mapping="item_id=product")
    with pytest.raises(ItemsFileError, match="unexpected keyword"):
        load_items(f"retailrocket:{RR}", mapping="item_id=x")
    assert set(ITEM_FORMATS) >= {"retailrocket", "csv"}
