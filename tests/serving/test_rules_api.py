"""Business rules over the real API, a real Redis and a real fitted model (issue #18):
boosts, pins, max_per, diversity, placements, explain=true, and their bad input."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.rules import DAY_MS
from tests.serving.conftest import running_app, with_overrides
from tests.serving.test_business_api import write_fold_in_user

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

KEY = {"X-API-Key": "secret"}


def brand_of(item: str) -> str:
    return "acme" if int(item[2]) % 2 == 0 else "zeta"


async def load_catalog(client, published) -> None:
    body = [{"item_id": item, "category": published.category_of[item],
             "attributes": {"brand": brand_of(item), "margin": int(item[2]) / 10}}
            for item in published.item_ids]
    r = await client.put("/v1/items", json=body, headers=KEY)
    assert r.status_code == 200, r.text


@pytest.fixture
async def api(settings, published):
    async with running_app(with_overrides(settings, api_key="secret")) as http:
        await load_catalog(http, published)
        yield http


def ids(body: dict) -> list[str]:
    return [i["item_id"] for i in body["items"]]


def boosted(score: float, weight: float) -> float:
    return score * weight if score >= 0 else score / weight


async def test_a_boost_reranks_by_the_weighted_score(api, published):
    plain = (await api.get("/v1/users/u1/recommendations", params={"k": 40})).json()
    rules = {"boosts": [{"field": "brand", "value": "zeta", "weight": 3.0},
                        {"field": "attributes.margin", "min": 0.8, "weight": 0.5}]}
    r = await api.post("/v1/users/u1/recommendations", json={"k": 10, "rules": rules})
    assert r.status_code == 200, r.text
    weight = {i: (3.0 if brand_of(i) == "zeta" else 1.0) * (0.5 if int(i[2]) >= 8 else 1.0)
              for i in published.item_ids}
    expected = sorted(plain["items"], key=lambda e: -boosted(e["score"], weight[e["item_id"]]))
    assert ids(r.json()) == [e["item_id"] for e in expected[:10]]
    assert ids(r.json()) != ids(plain)[:10]


async def test_pins_take_positions_and_unavailable_or_hidden_items_are_not_pinned(
        api, published, redis_client, keys):
    favourite = published.category_of[published.seen["u1"][0]]
    other = next(i for i in published.item_ids if published.category_of[i] != favourite)
    hidden = next(i for i in published.item_ids if published.category_of[i] != favourite
                  and i != other)
    redis_client.sadd(keys.hidden("u1"), hidden)
    await api.put("/v1/items/i39", json={"category": "cat3", "available": False}, headers=KEY)
    rules = {"pins": [{"item_id": other, "position": 1}, {"item_id": "i39", "position": 2},
                      {"item_id": hidden, "position": 3}]}
    body = (await api.post("/v1/users/u1/recommendations",
                           json={"k": 5, "rules": rules})).json()
    assert body["items"][0]["item_id"] == other and body["items"][0]["pinned"] is True
    assert "i39" not in ids(body) and hidden not in ids(body)
    assert [i.get("pinned", False) for i in body["items"]] == [True] + [False] * 4


async def test_a_pin_outside_the_requests_filters_is_not_placed(api, published):
    favourite = published.category_of[published.seen["u1"][0]]
    inside = next(i for i in published.item_ids if published.category_of[i] == favourite
                  and i not in published.seen["u1"])
    outside = next(i for i in published.item_ids if published.category_of[i] != favourite)
    rules = {"pins": [{"item_id": outside, "position": 1}, {"item_id": inside, "position": 2}]}
    r = await api.post("/v1/users/u1/recommendations", params={"category": favourite},
                       json={"k": 5, "rules": rules})
    assert r.status_code == 200, r.text
    body = r.json()
    assert outside not in ids(body)  # filters choose the candidates, rules only order them
    assert body["items"][1]["item_id"] == inside and body["items"][1]["pinned"] is True
    assert {published.category_of[i] for i in ids(body)} == {favourite}
    unfiltered = (await api.post("/v1/users/u1/recommendations",
                                 json={"k": 5, "rules": rules})).json()
    assert ids(unfiltered)[0] == outside  # the same pin without the filter is placed


async def test_pages_with_rules_tile_the_ranking(api):
    rules = {"boosts": [{"field": "brand", "value": "acme", "weight": 1.5}], "diversity": 0.3}
    whole = (await api.post("/v1/users/u2/recommendations",
                            json={"k": 10, "rules": rules})).json()
    first = (await api.post("/v1/users/u2/recommendations",
                            json={"k": 5, "rules": rules})).json()
    second = (await api.post("/v1/users/u2/recommendations",
                             json={"k": 5, "offset": 5, "rules": rules})).json()
    assert ids(first) + ids(second) == ids(whole)


async def test_max_per_caps_each_category_and_diversity_spreads_the_list(api, published):
    body = (await api.get("/v1/users/u1/recommendations",
                          params={"k": 8, "max_per": 2})).json()
    categories = [published.category_of[i] for i in ids(body)]
    assert len(body["items"]) == 8
    assert max(categories.count(c) for c in set(categories)) == 2
    plain = (await api.get("/v1/users/u1/recommendations", params={"k": 8})).json()
    spread = (await api.get("/v1/users/u1/recommendations",
                            params={"k": 8, "diversity": 0.9})).json()

    def mean_similarity(items: list[str]) -> float:
        y = published.item_factors[[published.item_ids.index(i) for i in items]]
        y = y / np.linalg.norm(y, axis=1, keepdims=True)
        sim = y @ y.T
        return float(sim[np.triu_indices(len(items), 1)].mean())

    assert mean_similarity(ids(spread)) < mean_similarity(ids(plain)) - 0.05
    same = (await api.get("/v1/users/u1/recommendations",
                          params={"k": 8, "diversity": 0})).json()
    assert ids(same) == ids(plain)


async def test_placements_are_managed_by_api_with_the_key_and_applied_by_name(api, published):
    rules = {"boosts": [{"field": "brand", "value": "zeta", "weight": 10.0}], "max_per": 3}
    assert (await api.put("/v1/placements/home", json=rules)).status_code == 401
    r = await api.put("/v1/placements/home", json=rules, headers=KEY)
    assert r.status_code == 200, r.text
    assert (await api.get("/v1/placements")).json()["home"]["max_per"] == 3
    assert (await api.get("/v1/placements/home")).json()["boosts"][0]["weight"] == 10.0
    body = (await api.get("/v1/users/u1/recommendations",
                          params={"k": 3, "placement": "home"})).json()
    assert body["placement"] == "home"
    same = (await api.post("/v1/users/u1/recommendations", json={"k": 3, "rules": rules}))
    assert ids(body) == ids(same.json())
    plain = (await api.get("/v1/users/u1/recommendations", params={"k": 3})).json()
    assert ids(body) != ids(plain)
    # A request's own rules go on top of the placement's.
    mine = {"k": 3, "placement": "home",
            "rules": {"boosts": [{"field": "brand", "value": "zeta", "weight": 1.0}],
                      "max_per": 40}}
    r = await api.post("/v1/users/u1/recommendations", json=mine)
    assert ids(r.json()) == ids(plain)
    for path in ("/v1/popular", "/v1/items/i00/similar"):
        r = await api.get(path, params={"k": 3, "placement": "home"})
        assert r.status_code == 200, r.text
    r = await api.delete("/v1/placements/home", headers=KEY)
    assert r.status_code == 204
    r = await api.get("/v1/users/u1/recommendations", params={"placement": "home"})
    assert r.status_code == 422 and "placement" in r.json()["detail"]


async def test_new_means_entered_the_catalogue_recently_by_the_servers_clock(
        api, published, redis_client, keys):
    first_added = int(redis_client.hget(keys.catalog_added, "i01"))
    # Re-writing an item keeps the time it first entered the catalogue.
    await api.put("/v1/items/i01", json={"category": "cat0"}, headers=KEY)
    assert int(redis_client.hget(keys.catalog_added, "i01")) == first_added
    # A client cannot say when an item is new.
    r = await api.put("/v1/items/i02", json={"category": "cat0", "added_ms": 0}, headers=KEY)
    assert r.status_code == 422
    # Every item but two entered long ago (a fresh API process reads the record).
    old = first_added - 30 * DAY_MS
    redis_client.hset(keys.catalog_added,
                      mapping={i: old for i in published.item_ids if i not in ("i30", "i31")})
    async with running_app(with_overrides(api._transport.app.state.settings)) as fresh:
        rules = {"boosts": [{"field": "new", "days": 7, "weight": 1000.0}]}
        r = await fresh.post("/v1/users/u1/recommendations", json={"k": 2, "rules": rules})
        assert r.status_code == 422 and "rules.boosts[0].weight" in r.json()["detail"]
        rules["boosts"][0]["weight"] = 10.0
        plain = (await fresh.get("/v1/users/u1/recommendations", params={"k": 40})).json()
        scores = {e["item_id"]: e["score"] for e in plain["items"]}
        body = (await fresh.post("/v1/users/u1/recommendations",
                                 json={"k": 40, "rules": rules})).json()
        expected = sorted(scores, key=lambda i: -boosted(scores[i],
                                                         10.0 if i in ("i30", "i31") else 1))
        assert ids(body) == expected


@pytest.mark.parametrize("request_, param", [
    ({"params": {"diversity": 1.5}}, "diversity"),
    ({"params": {"max_per": 0}}, "max_per"),
    ({"params": {"max_per": 2, "max_per_field": "price"}}, "max_per_field"),
    ({"params": {"max_per": 2, "max_per_field": "attributes.nope"}}, "max_per_field"),
    ({"params": {"placement": "nowhere"}}, "placement"),
    ({"params": {"placement": "bad name!"}}, "placement"),
    ({"json": {"rules": {"boosts": [{"field": "brand", "value": "x", "weight": 11}]}}},
     "rules.boosts[0].weight"),
    ({"json": {"rules": {"boosts": [{"field": "brand", "value": "x", "weight": 0.01}]}}},
     "rules.boosts[0].weight"),
    ({"json": {"rules": {"boosts": [{"field": "brand", "value": "x", "weight": 2},
                                    {"field": "brand", "value": "x", "weight": 0.5}]}}},
     "rules"),
    ({"json": {"rules": {"boosts": [{"field": "price", "min": 9, "max": 1, "weight": 2}]}}},
     "rules.boosts.0"),
    ({"json": {"rules": {"boosts": [{"field": "attributes.colour", "value": "red",
                                     "weight": 2}]}}}, "rules.boosts[0].field"),
    ({"json": {"k": 5, "rules": {"pins": [{"item_id": "i00", "position": 6}]}}},
     "rules.pins[0].position"),
    ({"json": {"rules": {"pins": [{"item_id": "i00", "position": 0}]}}}, "position"),
    ({"json": {"rules": {"unknown": 1}}}, "rules.unknown"),
    ({"json": {"k": 100000}}, "k"),
    ({"json": {"rules": {"diversity": "lots"}}}, "rules.diversity"),
])
async def test_bad_rules_are_422_naming_the_parameter(api, request_, param):
    if "json" in request_:
        r = await api.post("/v1/users/u1/recommendations", json=request_["json"])
    else:
        r = await api.get("/v1/users/u1/recommendations", params=request_["params"])
    assert r.status_code == 422, r.text
    assert param in r.json()["detail"], r.json()["detail"]


async def test_bad_placements_are_refused_at_write(api):
    r = await api.put("/v1/placements/p1", headers=KEY,
                      json={"boosts": [{"field": "attributes.nope", "value": 1, "weight": 2}]})
    assert r.status_code == 422 and "boosts[0].field" in r.json()["detail"]
    r = await api.put("/v1/placements/p1", headers=KEY,
                      json={"pins": [{"item_id": "a", "position": 100_000}]})
    assert r.status_code == 422 and "pins[0].position" in r.json()["detail"]
    r = await api.get("/v1/placements/p1")
    assert r.status_code == 404


async def test_explain_lists_the_because_contributions_of_every_item(
        api, published, redis_client, keys):
    items = ["i00", "i01", "i02", "i13", "i25"]
    write_fold_in_user(redis_client, keys, published, "fold", items, [3.0, 9.0, 1.5, 17.0, 5.0])
    body = (await api.get("/v1/users/fold/recommendations",
                          params={"k": 4, "explain": "true"})).json()
    assert body["source"] == "personalized" and len(body["items"]) == 4
    for entry in body["items"]:
        single = (await api.get(
            f"/v1/users/fold/recommendations/{entry['item_id']}/because",
            params={"k": 3})).json()
        assert [b["item_id"] for b in entry["because"]] == \
            [b["item_id"] for b in single["items"]]
        assert np.allclose([b["contribution"] for b in entry["because"]],
                           [b["contribution"] for b in single["items"]], rtol=1e-6)
    fallback = (await api.get("/v1/users/stranger/recommendations",
                              params={"explain": "true"})).json()
    assert fallback["source"].startswith("fallback:")
    assert all(entry["because"] == [] for entry in fallback["items"])


def canonical(codes: np.ndarray) -> list[int]:
    """Group codes renumbered by first appearance (-1 kept): equal when they group alike."""
    index: dict[int, int] = {}
    return [-1 if c < 0 else index.setdefault(c, len(index)) for c in codes.tolist()]


async def test_cached_rule_columns_are_what_the_views_say(api, published):
    from recsys.rules import Rules, columns_of

    services = api._transport.app.state.services
    model, catalog = services.holder.current, services.catalog
    rules = Rules.model_validate({
        "boosts": [{"field": "brand", "value": "zeta", "weight": 2.0},
                   {"field": "attributes.margin", "min": 0.5, "weight": 1.5},
                   {"field": "new", "days": 7, "weight": 1.2},
                   {"field": "category", "value": "cat1", "weight": 0.5}],
        "max_per": 2, "max_per_field": "brand"})
    ids = [*published.item_ids[:25][::-1], "nowhere"]  # the last: neither model nor catalogue
    rows = np.asarray([model.index.get(i, -1) for i in ids], dtype=np.intp)
    expected = columns_of(rules, await catalog.rule_items(ids))
    for _ in range(2):  # filling the cache, then read from it
        got = await catalog.rule_columns(rules, ids, model, rows)
        for mine, theirs in zip(got.boosts, expected.boosts, strict=True):
            assert np.array_equal(mine, theirs)
        assert canonical(got.groups) == canonical(expected.groups)
    assert expected.boosts[0].any() and not expected.boosts[0].all()


async def test_cached_rule_columns_follow_a_catalogue_write(api, published):
    rules = {"boosts": [{"field": "brand", "value": "zeta", "weight": 3.0}]}
    plain = (await api.get("/v1/users/u1/recommendations", params={"k": 40})).json()
    before = (await api.post("/v1/users/u1/recommendations",
                             json={"k": 40, "rules": rules})).json()
    # The best acme item turns zeta: the boost must see it at once (no stale column).
    moved = next(e["item_id"] for e in plain["items"] if brand_of(e["item_id"]) == "acme")
    r = await api.put(f"/v1/items/{moved}", headers=KEY, json={
        "category": published.category_of[moved],
        "attributes": {"brand": "zeta", "margin": int(moved[2]) / 10}})
    assert r.status_code == 200, r.text
    after = (await api.post("/v1/users/u1/recommendations",
                            json={"k": 40, "rules": rules})).json()

    def expected(zeta: set[str]) -> list[str]:
        return [e["item_id"] for e in sorted(plain["items"], key=lambda e: -boosted(
            e["score"], 3.0 if e["item_id"] in zeta else 1.0))]

    zeta = {i for i in published.item_ids if brand_of(i) == "zeta"}
    assert ids(before) == expected(zeta)
    assert ids(after) == expected(zeta | {moved}) != ids(before)


async def test_rule_columns_past_their_memory_bound_are_dropped_not_wrong(
        api, published, monkeypatch):
    from recsys.rules import Rules, columns_of
    from serving import catalog as catalog_module

    services = api._transport.app.state.services
    model, catalog = services.holder.current, services.catalog
    rows = len(model.item_ids)
    monkeypatch.setattr(catalog_module, "MAX_RULE_COLUMN_BYTES", 2 * 2 * rows)  # 2 columns
    rules = Rules.model_validate({"boosts": [
        {"field": "brand", "value": "zeta", "weight": 2.0},
        {"field": "brand", "value": "acme", "weight": 0.5},
        {"field": "attributes.margin", "min": 0.5, "weight": 1.5},
        {"field": "category", "value": "cat1", "weight": 3.0}]})
    ids = published.item_ids[:30]
    pool_rows = np.asarray([model.index[i] for i in ids], dtype=np.intp)
    expected = columns_of(rules, await catalog.rule_items(ids))
    for _ in range(2):
        got = await catalog.rule_columns(rules, ids, model, pool_rows)
        for mine, theirs in zip(got.boosts, expected.boosts, strict=True):
            assert np.array_equal(mine, theirs)
        table = catalog._rule_tables[model.version]
        assert 0 < table.nbytes() <= 2 * 2 * rows


async def filled(catalog) -> None:
    """Wait for the background fills of rule columns (serving.catalog) to finish."""
    import asyncio

    for _ in range(200):
        if not catalog._fill_tasks:
            return
        await asyncio.gather(*catalog._fill_tasks, return_exceptions=True)
    raise AssertionError("rule columns still filling")


async def test_the_first_pool_fills_every_rows_columns_in_the_background(api, published):
    """One request asks for a pool; afterwards every row of the version is known for its
    rule set and equals what the items' views say, and a later pool reads Redis for nothing."""
    from recsys.rules import Rules, columns_of
    from serving.catalog import _column_keys

    services = api._transport.app.state.services
    model, catalog = services.holder.current, services.catalog
    rules = Rules.model_validate({
        "boosts": [{"field": "brand", "value": "zeta", "weight": 2.0},
                   {"field": "attributes.margin", "min": 0.5, "weight": 1.5},
                   {"field": "new", "days": 7, "weight": 1.2}],
        "max_per": 2, "max_per_field": "category"})
    pool = list(model.item_ids[:3])
    await catalog.rule_columns(rules, pool, model,
                               np.asarray([model.index[i] for i in pool], dtype=np.intp))
    await filled(catalog)
    table = catalog._rule_tables[model.version]
    keys, _ = _column_keys(rules)
    assert all(table.columns[key][1].all() for key in keys)  # every row known
    everything = list(model.item_ids)
    expected = columns_of(rules, await catalog.rule_items(everything))
    for key, theirs in zip(keys, expected.boosts, strict=False):
        assert np.array_equal(table.columns[key][0], theirs)
    assert canonical(table.columns[keys[-1]][0]) == canonical(expected.groups)

    async def no_reads(*args, **kwargs):
        raise AssertionError("a known row was read from Redis")

    catalog.rule_items = no_reads
    rows = np.arange(len(everything), dtype=np.intp)[::-1].copy()
    got = await catalog.rule_columns(rules, everything[::-1], model, rows)
    assert np.array_equal(got.boosts[0], expected.boosts[0][::-1])


async def test_a_catalogue_write_forgets_only_its_items_row(api, published):
    from recsys.rules import Rules
    from serving.catalog import _column_keys

    services = api._transport.app.state.services
    model, catalog = services.holder.current, services.catalog
    rules = Rules.model_validate({"boosts": [{"field": "brand", "value": "zeta",
                                              "weight": 2.0}]})
    item = model.item_ids[0]
    await catalog.rule_columns(rules, [item], model, np.asarray([0], dtype=np.intp))
    await filled(catalog)
    table = catalog._rule_tables[model.version]
    values, done = table.columns[_column_keys(rules)[0][0]]
    assert done.all() and bool(values[0]) == (brand_of(item) == "zeta")
    flipped = "acme" if brand_of(item) == "zeta" else "zeta"
    r = await api.put(f"/v1/items/{item}", headers=KEY, json={
        "category": published.category_of[item], "attributes": {"brand": flipped}})
    assert r.status_code == 200, r.text
    assert not done[0] and done[1:].all()
    got = await catalog.rule_columns(rules, [item], model, np.asarray([0], dtype=np.intp))
    assert bool(got.boosts[0][0]) == (flipped == "zeta") and done[0]


def test_a_rule_table_grows_with_the_versions_fresh_rows_and_keeps_its_values():
    from serving.catalog import RuleTable

    table = RuleTable("v1", 3, {"a": 0, "b": 1, "c": 2})
    values, done = table.column(("boost", "brand"), bool)
    values[:] = [True, False, True]
    done[:] = True
    table.grow(5, {"a": 0, "b": 1, "c": 2, "d": 3, "e": 4})
    values, done = table.columns[("boost", "brand")]
    assert values.tolist() == [True, False, True, False, False]
    assert done.tolist() == [True, True, True, False, False]
    table.forget("d")  # a fresh row's item written: nothing known to forget, still counted
    table.forget("b")
    assert done.tolist() == [True, False, True, False, False] and table.writes == 2
