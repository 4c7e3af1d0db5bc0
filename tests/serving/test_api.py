"""Each read endpoint with good and bad input, against a real Redis and a real fitted model."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import orjson
import pytest

from recsys.foldin import fold_in, gram
from recsys.keys import Keys
from tests.serving.conftest import publish, running_app, with_overrides

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


def brute_top(published, user, k, exclude=(), candidates=None):
    scores = published.scores(user)
    rows = range(len(published.item_ids)) if candidates is None else candidates
    ranked = sorted((r for r in rows if published.item_ids[r] not in set(exclude)),
                    key=lambda r: -scores[r])
    return [published.item_ids[r] for r in ranked[:k]]


async def put_categories(client, published):
    for item in published.item_ids:
        r = await client.put(f"/v1/items/{item}",
                             json={"name": f"Item {item}", "category": published.category_of[item]})
        assert r.status_code == 200, r.text


# --- personalised ------------------------------------------------------------------------
async def test_personalised_is_the_models_top_k_without_seen_items(published, client):
    r = await client.get("/v1/users/u1/recommendations", params={"k": 5})
    assert r.status_code == 200
    body = r.json()
    assert body["source"] == "personalized" and body["model_version"] == "v1"
    got = [i["item_id"] for i in body["items"]]
    assert got == brute_top(published, "u1", 5, exclude=published.seen["u1"])
    scores = published.scores("u1")
    for item in body["items"]:
        assert item["score"] == pytest.approx(
            float(scores[published.item_ids.index(item["item_id"])]), rel=1e-5)
    # The model learnt the structure: u1 likes category 1, its unseen items come first.
    assert all(i.startswith("i1") for i in got[:4])


async def test_exclude_seen_false_ranks_all_items(published, client):
    r = await client.get("/v1/users/u2/recommendations", params={"k": 8, "exclude_seen": False})
    got = [i["item_id"] for i in r.json()["items"]]
    assert got == brute_top(published, "u2", 8)
    assert set(got) & set(published.seen["u2"])


async def test_buy_again_weight_brings_the_users_own_items_back_in_order(
        published, settings, redis_client):
    """A version whose trainer found users re-buying: exclude_seen=false fuses the model's
    list (own items excluded) with the user's items, most recent first (recsys.repeat)."""
    from recsys.repeat import fuse

    keys = Keys(settings.redis_namespace)
    meta = orjson.loads(redis_client.get(keys.model_manifest(published.version)))
    meta["buy_again"] = {"repeat_rate": 0.4, "weight": 4.0}
    redis_client.set(keys.model_manifest(published.version), orjson.dumps(meta))
    async with running_app(settings) as client:
        r = await client.get("/v1/users/u2/recommendations",
                             params={"k": 6, "exclude_seen": False})
        plain = await client.get("/v1/users/u2/recommendations", params={"k": 6})
    got = [i["item_id"] for i in r.json()["items"]]
    seen = published.seen["u2"]  # written most recent first by the fixture
    model = brute_top(published, "u2", 6, exclude=seen)
    row = {item: n for n, item in enumerate(published.item_ids)}
    expected = fuse([row[i] for i in model], [row[i] for i in seen], 4.0, 6)
    assert got == [published.item_ids[r_] for r_, _ in expected]
    assert got[0] == seen[0]  # the most recent own item leads at this weight
    # with seen items excluded nothing changes: the plain personalised list
    assert [i["item_id"] for i in plain.json()["items"]] == model


async def test_category_filter_and_catalog_details(published, client):
    await put_categories(client, published)
    r = await client.get("/v1/users/u3/recommendations", params={"k": 3, "category": "cat0"})
    body = r.json()
    assert body["source"] == "personalized"
    candidates = [n for n, i in enumerate(published.item_ids) if published.category_of[i] == "cat0"]
    assert [i["item_id"] for i in body["items"]] == brute_top(
        published, "u3", 3, exclude=published.seen["u3"], candidates=candidates)
    assert all(i["category"] == "cat0" and i["name"] == f"Item {i['item_id']}"
               for i in body["items"])


async def test_unavailable_items_are_never_recommended(published, client):
    top = brute_top(published, "u1", 1, exclude=published.seen["u1"])[0]
    r = await client.put(f"/v1/items/{top}", json={"name": "gone", "available": False})
    assert r.status_code == 200 and r.json()["available"] is False
    r = await client.get("/v1/users/u1/recommendations", params={"k": 10})
    got = [i["item_id"] for i in r.json()["items"]]
    assert top not in got
    assert got == brute_top(published, "u1", 10, exclude=[*published.seen["u1"], top])
    similar_to = published.similar[top][0][0]
    r = await client.get(f"/v1/items/{similar_to}/similar", params={"k": 30})
    assert top not in [i["item_id"] for i in r.json()["items"]]


async def test_unknown_user_gets_trending_without_their_seen_items(published, client,
                                                                    redis_client, keys):
    redis_client.zadd(keys.popularity("24h"), {"i31": 50.0, "i05": 40.0, "i17": 30.0})
    redis_client.zadd(keys.seen("stranger"), {"i05": time.time() * 1000})
    r = await client.get("/v1/users/newcomer/recommendations", params={"k": 5})
    body = r.json()
    assert r.status_code == 200 and body["source"] == "fallback:unknown_user"
    assert [i["item_id"] for i in body["items"]][:3] == ["i31", "i05", "i17"]
    assert body["fallback_sources"] == ["trending:24h", "popular:alltime"]
    # A user the stream has seen but not folded in under v1: seen items stay excluded.
    r = await client.get("/v1/users/stranger/recommendations", params={"k": 5})
    body = r.json()
    assert body["source"] == "fallback:no_user_vector"
    assert "i05" not in [i["item_id"] for i in body["items"]]
    assert body["items"][0]["item_id"] == "i31"


async def test_model_below_popularity_falls_back_and_says_so(fitted, settings, redis_client,
                                                             keys):
    items, users, item_factors, user_factors, _, _ = fitted
    publish(redis_client, keys, "weak", items, item_factors, users, user_factors,
            popularity={"i07": 9.0, "i03": 4.0}, beats_popularity=False)
    async with running_app(settings) as client:
        body = (await client.get("/v1/users/u1/recommendations", params={"k": 2})).json()
        assert body["source"] == "fallback:model_below_popularity"
        assert body["model_version"] == "weak"
        assert [i["item_id"] for i in body["items"]] == ["i07", "i03"]
        anon = await client.post("/v1/recommendations/anonymous",
                                 json={"items": [{"item_id": "i00"}]})
        assert anon.json()["source"] == "fallback:model_below_popularity"


async def test_cold_start_without_model_uses_categories_of_seen_items(settings, redis_client,
                                                                      keys, client):
    for item, category in [("a1", "shoes"), ("a2", "shoes"), ("a3", "shoes"), ("b1", "hats")]:
        r = await client.put(f"/v1/items/{item}", json={"category": category})
        assert r.status_code == 200
    redis_client.zadd(keys.seen("shopper"), {"a1": time.time() * 1000})
    r = await client.get("/v1/users/shopper/recommendations", params={"k": 5})
    body = r.json()
    assert body["source"] == "fallback:no_model" and body["model_version"] is None
    assert [i["item_id"] for i in body["items"]] == ["a2", "a3"]
    assert body["fallback_sources"] == ["category"]
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["model_version"] is None
    assert ready.json()["status"] == "degraded" and ready.json()["degraded"] == ["no_model"]


@pytest.mark.parametrize("query, fragment", [
    ({"k": 0}, "greater than or equal to 1"),
    ({"k": 501}, "between 1 and 500"),
    ({"k": "ten"}, "valid integer"),
    ({"exclude_seen": "perhaps"}, "valid boolean"),
    ({"category": "x" * 200}, "at most 128"),
])
async def test_bad_parameters_are_422_with_a_message(published, client, query, fragment):
    r = await client.get("/v1/users/u1/recommendations", params=query)
    assert r.status_code == 422
    assert fragment in r.json()["detail"]


async def test_malformed_ids_are_rejected(published, client):
    for path in ["/v1/users/%01bad/recommendations", "/v1/users/%20/recommendations",
                 f"/v1/users/{'u' * 129}/recommendations", "/v1/items/%7F/similar"]:
        r = await client.get(path)
        assert r.status_code == 422, path
        assert "detail" in r.json()


# --- similar -----------------------------------------------------------------------------
async def test_similar_items_come_from_the_versions_lists(published, client):
    r = await client.get("/v1/items/i00/similar", params={"k": 5})
    body = r.json()
    assert body["source"] == "similar" and body["model_version"] == "v1"
    assert [(i["item_id"], pytest.approx(i["score"])) for i in body["items"]] == \
        [(i, pytest.approx(s)) for i, s in published.similar["i00"]]


async def test_similar_tops_up_from_factors_when_k_exceeds_the_stored_list(published, client):
    r = await client.get("/v1/items/i21/similar", params={"k": 12})
    got = [i["item_id"] for i in r.json()["items"]]
    assert len(got) == 12 and len(set(got)) == 12 and "i21" not in got
    assert got[:5] == [i for i, _ in published.similar["i21"]]


async def test_similar_unknown_item_is_404_and_catalog_only_item_falls_back(published, client):
    r = await client.get("/v1/items/nope/similar")
    assert r.status_code == 404 and "nope" in r.json()["detail"]
    await client.put("/v1/items/new-1", json={"category": "cat2"})
    await put_categories(client, published)
    body = (await client.get("/v1/items/new-1/similar", params={"k": 3})).json()
    assert body["source"] == "fallback:item_not_in_model"
    ids = [i["item_id"] for i in body["items"]]
    assert len(ids) == 3 and "new-1" not in ids and body["fallback_sources"]
    # Asked for the item's own category, the fallback holds only items of that category.
    body = (await client.get("/v1/items/new-1/similar",
                             params={"k": 3, "category": "cat2"})).json()
    assert body["source"] == "fallback:item_not_in_model"
    ids = [i["item_id"] for i in body["items"]]
    assert len(ids) == 3 and "new-1" not in ids
    assert [published.category_of[i] for i in ids] == ["cat2"] * 3


# --- popular -----------------------------------------------------------------------------
async def test_popular_reads_the_trending_window(published, client, redis_client, keys):
    redis_client.zadd(keys.popularity("1h"), {"i10": 1.0, "i20": 5.0, "i30": 3.0})
    r = await client.get("/v1/popular", params={"k": 2, "window": "1h"})
    body = r.json()
    assert body["source"] == "popular" and body["window"] == "1h"
    assert [i["item_id"] for i in body["items"]] == ["i20", "i30"]
    await client.put("/v1/items/i20", json={"available": False})
    body = (await client.get("/v1/popular", params={"k": 2, "window": "1h"})).json()
    assert [i["item_id"] for i in body["items"]] == ["i30", "i10"]
    body = (await client.get("/v1/popular", params={"k": 2, "window": "7d"})).json()
    assert body["source"] == "fallback:no_trending_data"
    assert body["items"], "all-time popularity of the served version fills in"
    r = await client.get("/v1/popular", params={"window": "2h"})
    assert r.status_code == 422 and "window" in r.json()["detail"]


# --- anonymous ---------------------------------------------------------------------------
async def test_anonymous_session_is_folded_in_with_the_versions_maths(published, client):
    session = [{"item_id": "i30", "event_type": "view"},
               {"item_id": "i31", "event_type": "addtocart"},
               {"item_id": "i30", "event_type": "click"}, {"item_id": "unknown-item"}]
    r = await client.post("/v1/recommendations/anonymous", params={"k": 4}, json={"items": session})
    body = r.json()
    assert r.status_code == 200 and body["source"] == "anonymous"
    factors = published.item_factors
    rows = np.array([30, 31])
    conf = np.array([1 + 2.0 * (1.0 + 1.5), 1 + 2.0 * 4.0])  # manifest alpha 2, weights
    vector = fold_in(factors, gram(factors), 0.05, rows, conf)
    scores = factors @ vector
    ranked = [published.item_ids[r] for r in np.argsort(-scores) if r not in (30, 31)][:4]
    assert [i["item_id"] for i in body["items"]] == ranked
    assert all(i.startswith("i3") for i in ranked[:3])


async def test_anonymous_bad_and_unknown_input(published, client):
    r = await client.post("/v1/recommendations/anonymous", json={"items": []})
    assert r.status_code == 422 and "items" in r.json()["detail"]
    r = await client.post("/v1/recommendations/anonymous",
                          json={"items": [{"item_id": "i01", "event_type": "rating"}]})
    assert r.status_code == 422 and "rating" in r.json()["detail"]
    r = await client.post("/v1/recommendations/anonymous",
                          json={"items": [{"item_id": "i01"}] * 201})
    assert r.status_code == 422 and "at most 200" in r.json()["detail"]
    r = await client.post("/v1/recommendations/anonymous", content=b"{not json")
    assert r.status_code == 422
    r = await client.post("/v1/recommendations/anonymous", json={"items": [{"item_id": "zz"}]})
    assert r.status_code == 200 and r.json()["source"] == "fallback:no_known_items"


# --- catalog -----------------------------------------------------------------------------
async def test_catalog_put_get_roundtrip_and_errors(settings, client):
    item = {"name": "Red shoe", "image_url": "https://img.example/1.jpg", "category": "shoes",
            "price": 59.9, "available": True, "attributes": {"colour": "red", "size": 42}}
    r = await client.put("/v1/items/sku-1", json=item)
    # Fields not sent come back empty; `category` alone is a one-level path.
    stored = {"item_id": "sku-1", **item, "category_paths": [["shoes"]], "brand": None,
              "description": None, "tags": []}
    assert r.status_code == 200 and r.json() == stored
    assert (await client.get("/v1/items/sku-1")).json() == stored
    assert (await client.get("/v1/items/sku-2")).status_code == 404
    for bad in [{"price": -1}, {"colour": "red"}, {"attributes": {"x": [1, 2]}},
                {"name": "a\x00b"}, {"available": "maybe"}]:
        r = await client.put("/v1/items/sku-1", json=bad)
        assert r.status_code == 422, bad
    # Replacing drops fields that are no longer sent.
    await client.put("/v1/items/sku-1", json={"name": "Red shoe"})
    assert (await client.get("/v1/items/sku-1")).json()["category"] is None


async def test_write_endpoints_require_the_api_key_when_configured(settings):
    keyed = with_overrides(settings, api_key="s3cret")
    async with running_app(keyed) as client:
        assert (await client.put("/v1/items/x", json={})).status_code == 401
        r = await client.put("/v1/items/x", json={}, headers={"X-API-Key": "wrong"})
        assert r.status_code == 401 and "X-API-Key" in r.json()["detail"]
        assert (await client.put("/v1/items/x", json={},
                                 headers={"X-API-Key": "s3cret"})).status_code == 200
        assert (await client.post("/v1/events", json={})).status_code == 401
        assert (await client.post("/api/feedback", json={})).status_code == 401
        assert (await client.get("/v1/items/x")).status_code == 200  # reads stay open


async def test_a_second_replica_picks_up_catalog_changes(published, settings):
    fast = with_overrides(settings, api_catalog_poll_s=0.05)
    async with running_app(fast) as a, running_app(fast) as b:
        top = (await b.get("/v1/users/u1/recommendations", params={"k": 1})).json()["items"][0]
        await a.put(f"/v1/items/{top['item_id']}", json={"available": False})
        for _ in range(100):
            body = (await b.get("/v1/users/u1/recommendations", params={"k": 1})).json()
            if body["items"][0]["item_id"] != top["item_id"]:
                break
            await asyncio.sleep(0.02)
        assert body["items"][0]["item_id"] != top["item_id"]


# --- classic API, health, metrics --------------------------------------------------------
async def test_classic_recommendations_match_the_v1_endpoint(published, client):
    v1 = (await client.get("/v1/users/u5/recommendations", params={"k": 4})).json()
    r = await client.get("/api/recommendations", params={"user_id": "u5", "k": 4})
    body = r.json()
    assert r.status_code == 200 and body["source"] == "personalized"
    assert [x["product_id"] for x in body["recommendations"]] == [i["item_id"] for i in v1["items"]]
    assert (await client.get("/api/recommendations")).status_code == 422
    r = await client.post("/api/feedback", json={"user_id": "u5", "product_id": "i01", "rating": 9})
    assert r.status_code == 422 and "rating" in r.json()["detail"]


async def test_health_readiness_and_metrics(published, client):
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["model_version"] == "v1"
    assert ready.json()["status"] == "ready" and ready.json()["degraded"] == []
    await client.get("/v1/users/u1/recommendations")
    await client.get("/v1/users/ghost/recommendations")
    await client.get("/v1/users/u1/recommendations", params={"k": 0})
    text = (await client.get("/metrics")).text
    assert ('recsys_api_request_duration_seconds_count{method="GET",'
            'route="/v1/users/{user_id}/recommendations",status="200"} 2.0') in text
    assert 'route="/v1/users/{user_id}/recommendations",status="422"} 1.0' in text
    assert 'recsys_api_fallbacks_total{reason="unknown_user"} 1.0' in text
    assert 'recsys_api_model_version_info{version="v1"} 1.0' in text
    assert "recsys_api_factor_load_seconds_count 1.0" in text
    assert 'recsys_api_recommendations_total{endpoint="user",source="personalized"} 1.0' in text


def test_stored_similar_lists_are_read_in_the_format_the_manifest_names():
    """Packed lists (the trainer's format) and the JSON of older versions both read; an
    unreadable list is empty (the route then tops up from the factors), never an error."""
    from types import SimpleNamespace

    from recsys.modelstore import SIMILAR_FORMAT, pack_similar
    from serving.recommender import _stored_similar

    items = ["a", "b", "c"]
    packed = SimpleNamespace(model=SimpleNamespace(manifest={"similar_format": SIMILAR_FORMAT}),
                             item_ids=items)
    legacy = SimpleNamespace(model=SimpleNamespace(manifest={}), item_ids=items)
    raw = pack_similar(np.array([2, 0]), np.array([0.75, 0.5]))
    assert _stored_similar(packed, raw) == [("c", 0.75), ("a", 0.5)]
    assert _stored_similar(packed, raw[:-1]) == []
    assert _stored_similar(packed, None) == []
    assert _stored_similar(legacy, b'[["c", 0.75], ["a", 0.5]]') == [("c", 0.75), ("a", 0.5)]
    assert _stored_similar(legacy, b"not json") == []


async def test_the_k_parameter_documents_its_real_default(client):
    from recsys.settings import Settings
    from serving.deps import DEFAULT_K

    spec = (await client.get("/openapi.json")).json()
    params = spec["paths"]["/v1/users/{user_id}/recommendations"]["get"]["parameters"]
    [k] = [p for p in params if p["name"] == "k"]
    assert k["schema"]["default"] == DEFAULT_K
    assert f"default {DEFAULT_K}." in k["description"]
    assert f"default {Settings.model_fields['api_max_k'].default})" in k["description"]
    assert "default 500." not in k["description"]
