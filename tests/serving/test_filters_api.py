"""Filters on every list endpoint, against a real Redis and a real fitted model: the lists
hold only matching items, stay k long while k match (fetching deeper), and a bad filter is
a 422 naming its parameter."""

from __future__ import annotations

import numpy as np
import pytest

from tests.serving.conftest import running_app, with_overrides

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


def describe(n: int, item: str, category: str) -> dict:
    return {"name": f"Item {item}", "image_url": f"https://img.example/{item}.jpg",
            "category_paths": [["shop", category, f"sub{n % 2}"]],
            "brand": "acme" if n % 2 == 0 else "zeta", "price": float(n),
            "tags": ["sale"] if n % 3 == 0 else [],
            "attributes": {"colour": "red" if n % 4 < 2 else "blue", "year": 2000 + n % 5}}


async def put_catalogue(published, client) -> dict:
    """Every published item described (`describe`) and PUT into the catalogue."""
    entries = {item: describe(n, item, published.category_of[item])
               for n, item in enumerate(published.item_ids)}
    r = await client.put("/v1/items", json=[{"item_id": i, **e} for i, e in entries.items()])
    assert r.status_code == 200, r.text
    return entries


@pytest.fixture
async def catalogue(published, client):
    return await put_catalogue(published, client)


def passes(entry: dict, *, brands=None, price_max=None, tag=None, colour=None, prefix=None
           ) -> bool:
    """The filters of these tests, written out independently of recsys.item_filter."""
    path = entry["category_paths"][0]
    return ((brands is None or entry["brand"] in brands)
            and (price_max is None or entry["price"] <= price_max)
            and (tag is None or tag in entry["tags"])
            and (colour is None or entry["attributes"]["colour"] == colour)
            and (prefix is None or path[:len(prefix)] == prefix))


async def test_personalised_is_the_models_top_k_among_matching_items(published, client,
                                                                     catalogue):
    user = "u1"
    params = {"k": 5, "brand": "acme", "price_max": "30", "attr": "colour:red"}
    body = (await client.get(f"/v1/users/{user}/recommendations", params=params)).json()
    assert body["source"] == "personalized"
    scores = published.scores(user)
    matching = [n for n, item in enumerate(published.item_ids)
                if passes(catalogue[item], brands={"acme"}, price_max=30, colour="red")
                and item not in published.seen[user]]
    expected = [published.item_ids[n] for n in sorted(matching, key=lambda n: -scores[n])][:5]
    assert len(expected) == 5
    assert [i["item_id"] for i in body["items"]] == expected
    assert all(i["brand"] == "acme" and i["price"] <= 30 for i in body["items"])


async def test_a_selective_filter_still_fills_k_on_every_endpoint(published, client,
                                                                   catalogue, redis_client,
                                                                   keys):
    # One category, one brand, the sale tag: few items, none near the top of trending.
    wanted = [item for item in published.item_ids
              if passes(catalogue[item], brands={"zeta"}, tag="sale")]
    assert 3 <= len(wanted) < 10
    params = {"k": 3, "brand": "zeta", "tag": "sale"}
    # Trending: every item, the wanted ones at the bottom (beyond the first read's depth).
    redis_client.zadd(keys.popularity("24h"),
                      {item: (1.0 if item in wanted else 100.0 + n)
                       for n, item in enumerate(published.item_ids)})
    many = {f"x{n}": 1000.0 + n for n in range(200)}
    redis_client.zadd(keys.popularity("24h"), many)
    answers = {
        "personalised": await client.get("/v1/users/u2/recommendations",
                                         params={**params, "exclude_seen": "false"}),
        "anonymous": await client.post("/v1/recommendations/anonymous", params=params,
                                       json={"items": [{"item_id": published.item_ids[0]}]}),
        "similar": await client.get(f"/v1/items/{published.item_ids[1]}/similar",
                                    params=params),
        "popular": await client.get("/v1/popular", params=params),
    }
    for name, r in answers.items():
        assert r.status_code == 200, (name, r.text)
        ids = [i["item_id"] for i in r.json()["items"]]
        assert len(ids) == 3 and set(ids) <= set(wanted), (name, ids)
    assert answers["popular"].json()["source"] == "popular"


async def test_category_path_prefix_and_several_categories(published, client, catalogue):
    body = (await client.get("/v1/users/u3/recommendations",
                             params={"k": 40, "category_path": "shop/cat1/sub0"})).json()
    ids = [i["item_id"] for i in body["items"]]
    expected = {item for item in published.item_ids
                if passes(catalogue[item], prefix=["shop", "cat1", "sub0"])
                and item not in published.seen["u3"]}
    assert ids and set(ids) == expected
    # `category` matches any level of a path; several values: any one suffices.
    body = (await client.get("/v1/users/u3/recommendations",
                             params=[("k", "40"), ("category", "cat1"),
                                     ("category", "cat2")])).json()
    assert {published.category_of[i["item_id"]] for i in body["items"]} == {"cat1", "cat2"}


async def test_unavailable_items_only_on_request(published, client, catalogue):
    gone = published.item_ids[:4]
    for item in gone:
        r = await client.put(f"/v1/items/{item}", json={**catalogue[item], "available": False})
        assert r.status_code == 200
    body = (await client.get("/v1/popular", params={"k": 10})).json()
    assert not set(gone) & {i["item_id"] for i in body["items"]}
    body = (await client.get("/v1/users/u1/recommendations",
                             params={"k": 10, "available": "false",
                                     "exclude_seen": "false"})).json()
    assert sorted(i["item_id"] for i in body["items"]) == sorted(gone)


@pytest.mark.parametrize("query, param", [
    ({"price_min": "5", "price_max": "1"}, "price_min"),
    ({"price_min": "cheap"}, "price_min"),
    ({"price_max": "-1"}, "price_max"),
    ({"price_max": "nan"}, "price_max"),
    ({"attr": "colour"}, "attr"),
    ({"available": "maybe"}, "available"),
    ({"category_path": "a//b"}, "category_path"),
    ({"brand": "x" * 200}, "brand"),
    ([("price_min", "1"), ("price_min", "2")], "price_min"),
])
async def test_bad_filters_are_422_naming_the_parameter_on_every_endpoint(published, client,
                                                                         query, param):
    item = published.item_ids[0]
    calls = [client.get("/v1/users/u1/recommendations", params=query),
             client.get("/v1/popular", params=query),
             client.get(f"/v1/items/{item}/similar", params=query),
             client.post("/v1/recommendations/anonymous", params=query,
                         json={"items": [{"item_id": item}]})]
    for call in calls:
        r = await call
        assert r.status_code == 422, r.text
        assert r.json()["detail"].startswith(f"{param}:"), r.text


async def test_catalogue_round_trip_of_every_field(client, redis_client, keys):
    item = {"name": "Pan", "image_url": "https://img.example/pan.jpg", "category": "pans",
            "category_paths": [["home", "kitchen", "pans"], ["sale"]], "brand": "Acme",
            "price": 19.5, "description": "A pan.\nCast iron.", "tags": ["new", "iron"],
            "available": True, "attributes": {"diameter": 28, "colour": "black"}}
    r = await client.put("/v1/items/pan-1", json=item)
    assert r.status_code == 200, r.text
    assert r.json() == {"item_id": "pan-1", **item}
    assert (await client.get("/v1/items/pan-1")).json() == {"item_id": "pan-1", **item}
    listed = (await client.get("/v1/items")).json()["items"]
    assert listed == [{"item_id": "pan-1", **item}]
    # The filters see it at once (this process) and after a reload (another replica).
    r = await client.get("/v1/popular", params={"category_path": "home/kitchen",
                                                "attr": "diameter:28", "tag": "iron"})
    assert [i["item_id"] for i in r.json()["items"]] == ["pan-1"]
    # Without the path, `category` alone is a one-level path.
    r = await client.put("/v1/items/pan-2", json={"category": "pans"})
    assert r.json()["category_paths"] == [["pans"]]


@pytest.mark.parametrize("body, field", [
    ({"category": "pots", "category_paths": [["home", "pans"]]}, "category"),
    ({"category_paths": [[]]}, "category_paths[0]"),
    ({"category_paths": [["a"] * 13]}, "category_paths[0]"),
    ({"description": "x" * 10_001}, "description"),
    ({"tags": ["ok", ""]}, "tags"),
    ({"brand": "a\x01"}, "brand"),
])
async def test_bad_items_are_422_naming_the_field_and_nothing_is_written(client, body, field):
    r = await client.put("/v1/items/bad-1", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith(f"{field}:"), r.text
    r = await client.put("/v1/items", json=[{"item_id": "ok-1"}, {"item_id": "bad-1", **body}])
    assert r.status_code == 422 and f".{field}:" in r.json()["detail"], r.text
    assert r.json()["detail"].startswith("[1] (item 'bad-1')")
    assert (await client.get("/v1/items/ok-1")).status_code == 404


async def test_a_second_replica_filters_with_the_written_facets(published, settings):
    fast = with_overrides(settings, api_catalog_poll_s=0.05)
    async with running_app(fast) as writer:
        r = await writer.put("/v1/items", json=[
            {"item_id": item, **describe(n, item, published.category_of[item])}
            for n, item in enumerate(published.item_ids)])
        assert r.status_code == 200
    async with running_app(fast) as reader:  # loads the catalogue from Redis at start
        body = (await reader.get("/v1/users/u4/recommendations",
                                 params={"k": 40, "brand": "zeta", "price_max": "9"})).json()
    ids = [i["item_id"] for i in body["items"]]
    assert ids and all(published.item_ids.index(i) % 2 == 1
                       and published.item_ids.index(i) <= 9 for i in ids)


async def test_classic_api_items_carry_name_and_image(published, client, catalogue):
    r = await client.get("/api/recommendations", params={"user_id": "u1", "k": 3})
    assert r.status_code == 200
    recs = r.json()["recommendations"]
    assert len(recs) == 3
    for rec in recs:
        assert rec["name"] == f"Item {rec['product_id']}"
        assert rec["image_url"] == f"https://img.example/{rec['product_id']}.jpg"
    assert np.isfinite([rec["score"] for rec in recs]).all()


async def test_only_the_listed_attributes_are_filterable(published, settings):
    narrow = with_overrides(settings, api_filter_attributes=("colour",))
    async with running_app(narrow) as client:
        r = await client.put("/v1/items", json=[
            {"item_id": item, **describe(n, item, published.category_of[item])}
            for n, item in enumerate(published.item_ids)])
        assert r.status_code == 200
        for path in ("/v1/users/u1/recommendations", "/v1/popular"):
            r = await client.get(path, params={"attr": "year:2001"})
            assert r.status_code == 422 and r.json()["detail"].startswith("attr:"), r.text
        body = (await client.get("/v1/users/u1/recommendations",
                                 params={"k": 40, "attr": "colour:blue"})).json()
        assert body["items"] and all(i["attributes"]["colour"] == "blue"
                                     for i in body["items"])
        # Stored whole, indexed in part: the item still shows every attribute.
        assert "year" in (await client.get(f"/v1/items/{published.item_ids[0]}")).json()[
            "attributes"]
