import pytest

from recsys.item_attributes import InvalidItemAttributes, ItemAttributes


def test_category_is_the_leaf_of_the_primary_path_and_ancestors_are_prefixes():
    item = ItemAttributes("i1", category_paths=(("home", "kitchen", "pans"), ("sale",)))
    assert item.validate() is item
    assert item.category == "pans"
    assert item.ancestors() == {"home", "home/kitchen", "home/kitchen/pans", "sale"}


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"category_paths": ((),)}, "category_paths[0]"),
    ({"category_paths": (tuple(f"c{i}" for i in range(13)),)}, "category_paths[0]"),
    ({"category_paths": (("ok", "bad\x00"),)}, "category_paths[0]"),
    ({"description": "x" * 10_001}, "description"),
    ({"price": float("nan")}, "price"),
    ({"price": -1.0}, "price"),
    ({"tags": ("",)}, "tags"),
    ({"attributes": {"colour": [1, 2]}}, "attributes.colour"),
    ({"attributes": {"margin": float("inf")}}, "attributes.margin"),
])
def test_bad_attributes_name_the_field(kwargs, field):
    with pytest.raises(InvalidItemAttributes) as raised:
        ItemAttributes("i1", **kwargs).validate()
    assert raised.value.field == field
    assert field in str(raised.value)
