"""Business rules (recsys.rules): pure logic on hand-made pools with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from recsys.rules import (
    DAY_MS,
    Boost,
    Pin,
    Rules,
    RulesError,
    apply_rules,
    boosted,
    check_rules,
    matches,
    mmr_order,
    select,
    values_of,
    view_of,
)

NOW = 1_700_000_000_000
ITEMS = {
    "a": {"category": "shoes", "attributes": {"brand": "acme", "margin": 0.1}, "price": 50.0},
    "b": {"category": "shoes", "attributes": {"brand": "zeta", "margin": 0.5}, "price": 20.0},
    "c": {"category": "hats", "attributes": {"brand": "acme", "margin": 0.4},
          "added_ms": NOW - 2 * DAY_MS},
    "d": {"category": "hats", "attributes": {"colour": "red", "flag": True}},
    "e": {"category_paths": [["clothes", "socks"]], "brand": "zeta", "tags": ["sale"]},
}
IDS = list(ITEMS)
SCORES = [5.0, 4.0, 3.0, 2.0, 1.0]
POOL = [view_of(ITEMS[i]) for i in IDS]


def run(rules: Rules, depth: int = 5, vectors=None, pinnable=None):
    return apply_rules(rules, IDS, SCORES, POOL, vectors, NOW, depth, pinnable)


def test_no_rules_keep_the_models_order():
    assert run(Rules()).ids == IDS


def test_a_boost_multiplies_the_matching_items_and_reranks():
    ranked = run(Rules(boosts=[Boost(field="brand", value="zeta", weight=2.0)]))
    # b: 4*2 = 8, e: 1*2 = 2 (ties keep the model's order: d before e)
    assert ranked.ids == ["b", "a", "c", "d", "e"]
    assert ranked.scores[0] == pytest.approx(8.0)


def test_a_bury_moves_items_down_and_weights_multiply():
    rules = Rules(boosts=[Boost(field="category", value="shoes", weight=0.5),
                          Boost(field="attributes.margin", min=0.45, weight=0.5)])
    ranked = run(rules)
    # a 2.5, b 4*0.25 = 1.0
    assert ranked.ids == ["c", "a", "d", "b", "e"]


def test_boost_of_a_negative_score_still_raises_it():
    assert boosted(np.array([-4.0, 4.0]), np.array([2.0, 2.0])).tolist() == [-2.0, 8.0]
    assert boosted(np.array([-4.0]), np.array([0.5])).tolist() == [-8.0]


def test_new_items_are_those_the_catalogue_recorded_within_the_days():
    assert matches(Boost(field="new", days=3, weight=2), view_of(ITEMS["c"]), NOW)
    assert not matches(Boost(field="new", days=1, weight=2), view_of(ITEMS["c"]), NOW)
    assert not matches(Boost(field="new", days=30, weight=2), view_of(ITEMS["a"]), NOW)


def test_matching_reads_both_catalogue_shapes():
    assert values_of(ITEMS["a"], "brand") == ["acme"]
    assert values_of(ITEMS["e"], "brand") == ["zeta"]
    assert values_of(ITEMS["e"], "category") == ["clothes/socks", "clothes"]
    assert matches(Boost(field="category", value="clothes", weight=2), view_of(ITEMS["e"]), NOW)
    assert matches(Boost(field="tag", value="sale", weight=2), view_of(ITEMS["e"]), NOW)
    assert matches(Boost(field="price", max=20, weight=2), view_of(ITEMS["b"]), NOW)
    assert not matches(Boost(field="price", max=20, weight=2), view_of(ITEMS["a"]), NOW)
    assert values_of(None, "brand") == []
    assert view_of(None) == {}


def test_attribute_equality_does_not_take_true_for_one():
    assert matches(Boost(field="attributes.flag", value=True, weight=2), view_of(ITEMS["d"]), NOW)
    assert not matches(Boost(field="attributes.flag", value=1, weight=2), view_of(ITEMS["d"]), NOW)
    assert not matches(Boost(field="attributes.colour", min=0, weight=2), view_of(ITEMS["d"]), NOW)


def test_max_per_caps_each_group():
    ranked = run(Rules(max_per=1))
    assert ranked.ids == ["a", "c", "e"]  # e's primary category is its path
    ranked = run(Rules(max_per=1, max_per_field="brand"))
    assert ranked.ids == ["a", "b", "d"]  # d has no brand: never capped


def test_pins_take_their_positions_and_leave_their_old_place():
    ranked = run(Rules(pins=[Pin(item_id="d", position=1), Pin(item_id="zz", position=3)]),
                 pinnable={"d": 0.0, "zz": 0.0})
    assert ranked.ids == ["d", "a", "zz", "b", "c"]
    assert ranked.pinned == [True, False, True, False, False]
    assert ranked.scores[0] == 2.0  # a pinned pool item keeps its own score


def test_pins_of_items_that_may_not_be_shown_are_dropped():
    ranked = run(Rules(pins=[Pin(item_id="zz", position=1)]), pinnable={})
    assert ranked.ids == IDS


def test_mmr_zero_keeps_the_order_and_one_spreads_out():
    vectors = np.array([[1.0, 0.0], [1.0, 0.01], [0.99, 0.0], [0.0, 1.0], [0.5, 0.5]])
    assert run(Rules(diversity=0.0), vectors=vectors).ids == IDS
    spread = run(Rules(diversity=0.7), depth=2, vectors=vectors).ids
    assert spread == ["a", "d"]  # d is orthogonal to a; b and c are near copies of a


def test_mmr_order_honours_the_cap_too():
    rel = np.array([1.0, 0.9, 0.8])
    vectors = np.eye(3)
    assert mmr_order(rel, vectors, 0.5, ["x", "x", "y"], 1, 3) == [0, 2]


@pytest.mark.parametrize("diversity", [0.0, 0.4])
def test_selection_by_sparse_group_codes_is_selection_by_groups(diversity):
    # Serving numbers a whole catalogue's groups: codes are large and sparse, -1 uncapped.
    rng = np.random.default_rng(4)
    rel = np.sort(rng.random(40))[::-1]
    vectors = rng.standard_normal((40, 6))
    groups = [None if n % 7 == 0 else f"g{n % 3}" for n in range(40)]
    codes = np.asarray([-1 if g is None else 10_000 * int(g[1]) + 77 for g in groups])
    chosen = select(rel, vectors, diversity, codes, 2, 20)
    assert chosen == mmr_order(rel, vectors, diversity, groups, 2, 20)
    picked = [groups[i] for i in chosen]
    assert all(picked.count(g) <= 2 for g in ("g0", "g1", "g2")) and None in picked


@pytest.mark.parametrize("body, message", [
    ({"boosts": [{"field": "brand", "value": "a", "weight": 2},
                 {"field": "brand", "value": "a", "weight": 0.5}]}, "same condition"),
    ({"boosts": [{"field": "price", "min": 5, "max": 1, "weight": 2}]}, "greater than max"),
    ({"boosts": [{"field": "new", "weight": 2}]}, "days"),
    ({"boosts": [{"field": "brand", "min": 1, "weight": 2}]}, "text `value`"),
    ({"boosts": [{"field": "size", "value": "x", "weight": 2}]}, "pattern"),
    ({"pins": [{"item_id": "a", "position": 1}, {"item_id": "a", "position": 2}]}, "twice"),
    ({"pins": [{"item_id": "a", "position": 1}, {"item_id": "b", "position": 1}]}, "twice"),
    ({"diversity": 1.5}, "less than or equal"),
    ({"max_per": 2, "max_per_field": "price"}, "max_per_field"),
])
def test_bad_rules_are_refused_with_the_reason(body, message):
    with pytest.raises(ValidationError, match=message):
        Rules.model_validate(body)


def test_check_rules_names_the_parameter():
    rules = Rules(boosts=[Boost(field="brand", value="a", weight=20.0)])
    with pytest.raises(RulesError) as err:
        check_rules(rules, max_weight=10, max_position=5, known_attributes=())
    assert err.value.param == "rules.boosts[0].weight"
    with pytest.raises(RulesError) as err:
        check_rules(Rules(pins=[Pin(item_id="a", position=6)]), max_weight=10,
                    max_position=5, known_attributes=())
    assert err.value.param == "rules.pins[0].position"
    with pytest.raises(RulesError) as err:
        check_rules(Rules(boosts=[Boost(field="attributes.marginn", min=0.1, weight=2)]),
                    max_weight=10, max_position=5, known_attributes={"margin"}, param="")
    assert err.value.param == "boosts[0].field" and "marginn" in str(err.value)
    check_rules(Rules(boosts=[Boost(field="attributes.margin", min=0.1, weight=0.1)]),
                max_weight=10, max_position=5, known_attributes={"margin"})


def test_request_rules_over_a_placements():
    base = Rules(boosts=[Boost(field="brand", value="a", weight=2.0),
                         Boost(field="tag", value="t", weight=3.0)],
                 pins=[Pin(item_id="x", position=1), Pin(item_id="y", position=2)],
                 max_per=2, max_per_field="brand", diversity=0.5)
    mine = Rules(boosts=[Boost(field="brand", value="a", weight=0.5)],
                 pins=[Pin(item_id="z", position=2)], diversity=0.0)
    merged = mine.over(base)
    assert {(b.field, b.weight) for b in merged.boosts} == {("brand", 0.5), ("tag", 3.0)}
    assert {(p.item_id, p.position) for p in merged.pins} == {("x", 1), ("z", 2)}
    assert merged.max_per == 2 and merged.diversity == 0.0
    assert merged.max_per_field == "brand"  # not given by the request: the placement's
