"""The batch route and the classic API take the list filters of the single-user route, and
the batch its business rules (issue #18); a real Redis, a real fitted model, the real app.
Each batch list must equal what the single-user route answers with the same parameters."""

from __future__ import annotations

import pytest

from tests.serving.conftest import running_app, with_overrides
from tests.serving.test_filters_api import passes, put_catalogue

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

USERS = ["u1", "stranger", "u3", "u6"]


@pytest.fixture
async def catalogue(published, client):
    return await put_catalogue(published, client)


def ids(body: dict) -> list[str]:
    return [i["item_id"] for i in body["items"]]


async def assert_same_lists(client, results: list[dict], single) -> None:
    """Each batch result equals the single-user route's answer (`single(user)`)."""
    assert [x["user_id"] for x in results] == USERS
    for user, result in zip(USERS, results, strict=True):
        r = await single(user)
        assert r.status_code == 200, r.text
        alone = r.json()
        assert result["source"] == alone["source"], user
        assert ids(result) == ids(alone), user
        for a, b in zip(result["items"], alone["items"], strict=True):
            assert a["score"] == pytest.approx(b["score"], rel=1e-5, abs=1e-6)
            assert a.get("pinned", False) == b.get("pinned", False)
        assert result.get("placement") == alone.get("placement")


async def test_batch_filter_object_equals_the_single_route_with_the_same_query(
        published, client, catalogue):
    query = {"k": 4, "brand": "acme", "price_max": "30", "attr": "colour:red"}
    body = {"user_ids": USERS, "k": 4,
            "filter": {"brand": "acme", "price_max": 30, "attr": {"colour": "red"}}}
    r = await client.post("/v1/recommendations/batch", json=body)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    await assert_same_lists(client, results, lambda user: client.get(
        f"/v1/users/{user}/recommendations", params=query))
    # The filter holds, and it did change the lists (checked independently of the parser).
    for result in results:
        assert result["items"] and all(passes(catalogue[i], brands={"acme"}, price_max=30,
                                              colour="red") for i in ids(result))
    plain = (await client.post("/v1/recommendations/batch",
                               json={"user_ids": USERS, "k": 4})).json()["results"]
    assert [ids(x) for x in plain] != [ids(x) for x in results]
    # The same filters in the query string, as on POST /v1/users/{id}/recommendations.
    r = await client.post("/v1/recommendations/batch",
                          params={n: v for n, v in query.items() if n != "k"},
                          json={"user_ids": USERS, "k": 4})
    assert [ids(x) for x in r.json()["results"]] == [ids(x) for x in results]


async def test_batch_filter_lists_and_category_paths(published, client, catalogue):
    body = {"user_ids": USERS, "k": 40,
            "filter": {"category_path": ["shop/cat1/sub0", "shop/cat2"], "tag": "sale",
                       "attr": {"year": 2003.0}}}
    r = await client.post("/v1/recommendations/batch", json=body)
    assert r.status_code == 200, r.text
    query = [("k", "40"), ("category_path", "shop/cat1/sub0"), ("category_path", "shop/cat2"),
             ("tag", "sale"), ("attr", "year:2003")]
    await assert_same_lists(client, r.json()["results"], lambda user: client.get(
        f"/v1/users/{user}/recommendations", params=query))
    # The older top-level `category` still works, as filter.category.
    old = await client.post("/v1/recommendations/batch",
                            json={"user_ids": USERS, "k": 5, "category": "cat2"})
    new = await client.post("/v1/recommendations/batch",
                            json={"user_ids": USERS, "k": 5, "filter": {"category": ["cat2"]}})
    assert old.status_code == new.status_code == 200
    assert [ids(x) for x in old.json()["results"]] == [ids(x) for x in new.json()["results"]]
    assert {published.category_of[i] for x in new.json()["results"] for i in ids(x)} == {"cat2"}


async def test_batch_rules_and_placement_equal_the_single_route(
        published, client, catalogue, redis_client, keys):
    r = await client.put("/v1/placements/mail", json={
        "boosts": [{"field": "brand", "value": "zeta", "weight": 4.0}], "max_per": 2})
    assert r.status_code == 200, r.text
    pinned = next(i for i in published.item_ids if i not in published.seen["u1"])
    redis_client.sadd(keys.hidden("u3"), pinned)  # hidden from u3: not pinned for u3
    request = {"k": 6, "placement": "mail",
               "rules": {"boosts": [{"field": "attributes.year", "min": 2003, "weight": 2.0}],
                         "pins": [{"item_id": pinned, "position": 2}], "diversity": 0.3}}
    r = await client.post("/v1/recommendations/batch", json={"user_ids": USERS, **request})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    await assert_same_lists(client, results, lambda user: client.post(
        f"/v1/users/{user}/recommendations", json=request))
    by_user = dict(zip(USERS, results, strict=True))
    assert by_user["u1"]["items"][1]["item_id"] == pinned
    assert by_user["u1"]["items"][1]["pinned"] is True
    assert pinned not in ids(by_user["u3"])
    assert by_user["u1"]["placement"] == "mail"
    plain = (await client.post("/v1/recommendations/batch",
                               json={"user_ids": USERS, "k": 6})).json()["results"]
    assert ids(plain[0]) != ids(by_user["u1"])
    # Filters choose the candidates, the rules re-rank them: both at once.
    both = {"user_ids": USERS, "k": 3, "filter": {"brand": "acme"}, "placement": "mail"}
    r = await client.post("/v1/recommendations/batch", json=both)
    assert r.status_code == 200, r.text
    await assert_same_lists(client, r.json()["results"], lambda user: client.get(
        f"/v1/users/{user}/recommendations",
        params={"k": 3, "brand": "acme", "placement": "mail"}))


@pytest.mark.parametrize("body, param", [
    ({"filter": {"price_min": "cheap"}}, "filter.price_min"),
    ({"filter": {"price_min": 5, "price_max": 1}}, "filter.price_min"),
    ({"filter": {"price_max": -1}}, "filter.price_max"),
    ('"filter": {"price_max": NaN}', "filter.price_max"),  # Python's json reads NaN
    ('"filter": {"price_min": 1e999}', "filter.price_min"),
    ({"filter": {"available": "maybe"}}, "filter.available"),
    ({"filter": {"category_path": "a//b"}}, "filter.category_path"),
    ({"filter": {"brand": ["x" * 300]}}, "filter.brand"),
    ({"filter": {"brand": [f"b{n}" for n in range(33)]}}, "filter.brand"),
    ({"filter": {"tag": ["ok", " "]}}, "filter.tag"),
    ({"filter": {"attr": {"colour": ["red"]}}}, "filter.attr"),
    ({"filter": {"attr": {"a:b": "c"}}}, "filter.attr"),
    ({"filter": {"colour": "red"}}, "filter.colour"),
    ({"filter": "brand=acme"}, "filter"),
    ({"filter": {"brand": "acme"}, "category": "cat1"}, "filter"),
    ({"placement": "nowhere"}, "placement"),
    ({"placement": "bad name!"}, "placement"),
    ({"rules": {"pins": [{"item_id": "i00", "position": 5}]}}, "rules.pins[0].position"),
    ({"rules": {"boosts": [{"field": "brand", "value": "x", "weight": 11}]}},
     "rules.boosts[0].weight"),
    ({"rules": {"diversity": 2}}, "rules.diversity"),
])
async def test_bad_batch_filters_and_rules_are_422_naming_the_parameter(published, client,
                                                                        body, param):
    if isinstance(body, str):  # JSON that json.dumps would not write
        r = await client.post("/v1/recommendations/batch",
                              content='{"user_ids": ["u1"], "k": 4, ' + body + '}',
                              headers={"content-type": "application/json"})
    else:
        r = await client.post("/v1/recommendations/batch",
                              json={"user_ids": ["u1"], "k": 4, **body})
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith(f"{param}"), r.json()["detail"]
    r = await client.post("/v1/recommendations/batch", params={"brand": "acme"},
                          json={"user_ids": ["u1"], "filter": {"brand": "zeta"}})
    assert r.status_code == 422 and r.json()["detail"].startswith("filter:"), r.text


async def test_batch_attribute_filters_follow_api_filter_attributes(published, settings):
    async with running_app(with_overrides(settings, api_filter_attributes=("colour",))
                           ) as client:
        r = await client.post("/v1/recommendations/batch",
                              json={"user_ids": ["u1"], "filter": {"attr": {"year": 2001}}})
        assert r.status_code == 422 and r.json()["detail"].startswith("filter.attr:"), r.text


# --- the classic API ----------------------------------------------------------------------
async def test_classic_api_takes_the_v1_filters(published, client, catalogue):
    query = [("k", "5"), ("brand", "zeta"), ("price_min", "3"), ("category", "cat0"),
             ("category", "cat3"), ("attr", "colour:blue")]
    r = await client.get("/api/recommendations", params=[("user_id", "u2"), *query])
    assert r.status_code == 200, r.text
    classic = r.json()
    v1 = (await client.get("/v1/users/u2/recommendations", params=query)).json()
    assert classic["source"] == v1["source"] == "personalized"
    assert [x["product_id"] for x in classic["recommendations"]] == ids(v1)
    assert classic["recommendations"]
    for entry in classic["recommendations"]:
        item = catalogue[entry["product_id"]]
        assert passes(item, brands={"zeta"}, colour="blue") and item["price"] >= 3
        assert published.category_of[entry["product_id"]] in {"cat0", "cat3"}
        assert entry["name"] == item["name"]
    plain = (await client.get("/api/recommendations", params={"user_id": "u2", "k": 5})).json()
    assert [x["product_id"] for x in plain["recommendations"]] != ids(v1)


@pytest.mark.parametrize("query, param", [
    ({"price_min": "5", "price_max": "1"}, "price_min"),
    ({"price_max": "nan"}, "price_max"),
    ({"attr": "colour"}, "attr"),
    ({"available": "maybe"}, "available"),
    ({"category_path": "a//b"}, "category_path"),
])
async def test_bad_classic_filters_are_422_naming_the_parameter(published, client, query,
                                                                param):
    r = await client.get("/api/recommendations", params={"user_id": "u1", **query})
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith(f"{param}:"), r.text


# --- pins beyond the rules' pool ----------------------------------------------------------
async def test_a_pin_pulls_an_item_from_beyond_the_pool(published, client, catalogue,
                                                        settings):
    """Rules re-rank the top api_rules_pool_factor x k; a pinned item is shown wherever the
    model ranks it (the pin names it), a boosted one only when it is in that pool."""
    ranking = ids((await client.get("/v1/users/u1/recommendations",
                                    params={"k": 40})).json())
    k = 3
    pool = settings.api_rules_pool_factor * k + 1
    deep = ranking[-1]
    assert ranking.index(deep) >= pool
    rules = {"pins": [{"item_id": deep, "position": 2}]}
    single = (await client.post("/v1/users/u1/recommendations",
                                json={"k": k, "rules": rules})).json()
    batch = (await client.post("/v1/recommendations/batch",
                               json={"user_ids": ["u1"], "k": k, "rules": rules})).json()
    for body in (single, batch["results"][0]):
        assert ids(body) == [ranking[0], deep, ranking[1]]
        assert [i.get("pinned", False) for i in body["items"]] == [False, True, False]
        assert body["items"][1]["score"] == 0.0  # never scored: it was not in the pool
