"""PUT /v1/items: the bulk catalog write, against a real Redis (and a real fitted model)."""

from __future__ import annotations

import asyncio

import pytest

from serving.schemas import MAX_CATALOG_BATCH
from tests.serving.conftest import running_app, with_overrides

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

SHOE = {"name": "Red shoe", "image_url": "https://img.example/1.jpg", "category": "shoes",
        "price": 59.9, "available": True, "attributes": {"colour": "red", "size": 42}}


async def test_bulk_put_stores_every_item_like_single_puts(client, redis_client, keys):
    batch = [{"item_id": "sku-1", **SHOE},
             {"item_id": "sku-2", "name": "Blue hat", "category": "hats", "available": False},
             {"item_id": "sku-3"}]
    before = int(redis_client.get(keys.catalog_generation) or 0)
    r = await client.put("/v1/items", json=batch)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["stored"] == 3 and [i["item_id"] for i in body["items"]] == ["sku-1", "sku-2",
                                                                            "sku-3"]
    # The same answers as one PUT per item would give, fields not sent included.
    for entry, echoed in zip(batch, body["items"], strict=True):
        single = (await client.get(f"/v1/items/{entry['item_id']}")).json()
        assert echoed == single
    assert (await client.get("/v1/items/sku-1")).json() == {
        "item_id": "sku-1", **SHOE, "category_paths": [["shoes"]], "brand": None,
        "description": None, "tags": []}
    assert (await client.get("/v1/items/sku-2")).json()["available"] is False
    assert (await client.get("/v1/items/sku-3")).json()["category"] is None
    # One generation step per batch: other replicas reload once, not once per item.
    assert int(redis_client.get(keys.catalog_generation)) == before + 1
    assert redis_client.hget(keys.catalog_category, "sku-1") == b"shoes"
    assert redis_client.sismember(keys.catalog_unavailable, "sku-2")


async def test_bulk_put_replaces_and_a_later_duplicate_wins(client):
    await client.put("/v1/items/sku-1", json=SHOE)
    r = await client.put("/v1/items", json=[{"item_id": "sku-1", "name": "first"},
                                            {"item_id": "sku-1", "name": "second",
                                             "available": False}])
    assert r.status_code == 200, r.text
    item = (await client.get("/v1/items/sku-1")).json()
    assert item["name"] == "second" and item["available"] is False
    assert item["category"] is None  # replaced, not merged


@pytest.mark.parametrize("bad", [
    [],
    {"item_id": "sku-1"},
    [{"name": "no id"}],
    [{"item_id": "ok-1"}, {"item_id": "ok-2", "price": -1}],
    [{"item_id": "ok-1"}, {"item_id": "a\x00b"}],
    [{"item_id": "ok-1", "colour": "red"}],
    [{"item_id": f"i{n}"} for n in range(MAX_CATALOG_BATCH + 1)],
])
async def test_a_bad_batch_is_422_and_writes_nothing(client, bad):
    r = await client.put("/v1/items", json=bad)
    assert r.status_code == 422, r.text
    assert r.json()["detail"]
    assert (await client.get("/v1/items/ok-1")).status_code == 404


async def test_bulk_put_requires_the_api_key_when_configured(settings):
    keyed = with_overrides(settings, api_key="s3cret")
    async with running_app(keyed) as client:
        assert (await client.put("/v1/items", json=[{"item_id": "x"}])).status_code == 401
        r = await client.put("/v1/items", json=[{"item_id": "x"}],
                             headers={"X-API-Key": "wrong"})
        assert r.status_code == 401
        r = await client.put("/v1/items", json=[{"item_id": "x"}],
                             headers={"X-API-Key": "s3cret"})
        assert r.status_code == 200 and r.json()["stored"] == 1


async def test_bulk_availability_and_categories_reach_recommendations(published, settings):
    fast = with_overrides(settings, api_catalog_poll_s=0.05)
    async with running_app(fast) as a, running_app(fast) as b:
        top = [i["item_id"] for i in
               (await a.get("/v1/users/u1/recommendations", params={"k": 3})).json()["items"]]
        batch = [{"item_id": item, "category": published.category_of[item],
                  "available": item not in top} for item in published.item_ids]
        assert (await a.put("/v1/items", json=batch)).status_code == 200
        # This replica applied the batch at once...
        body = (await a.get("/v1/users/u1/recommendations", params={"k": 5})).json()
        assert not set(top) & {i["item_id"] for i in body["items"]}
        category = published.category_of[published.item_ids[0]]
        body = (await a.get("/v1/users/u1/recommendations",
                            params={"k": 5, "category": category})).json()
        assert body["items"] and {i["category"] for i in body["items"]} == {category}
        # ...and the other one reloads it from the generation counter.
        for _ in range(100):
            body = (await b.get("/v1/users/u1/recommendations", params={"k": 5})).json()
            if not set(top) & {i["item_id"] for i in body["items"]}:
                break
            await asyncio.sleep(0.02)
        assert not set(top) & {i["item_id"] for i in body["items"]}


@pytest.mark.parametrize("size", [0, 5])
async def test_writes_respect_the_detail_cache_size(settings, size):
    small = with_overrides(settings, api_catalog_cache_size=size)
    async with running_app(small) as client:
        catalog = client._transport.app.state.services.catalog
        r = await client.put("/v1/items", json=[{"item_id": f"sku-{n}", "name": f"n{n}"}
                                                for n in range(40)])
        assert r.status_code == 200
        assert len(catalog._details) <= size
        for n in range(12):
            r = await client.put(f"/v1/items/one-{n}", json={"name": "x"})
            assert r.status_code == 200
            assert len(catalog._details) <= size
        # Whatever the cache kept, details still read back from Redis.
        assert (await client.get("/v1/items/sku-3")).json()["name"] == "n3"


async def test_details_of_an_item_gone_during_their_read_are_not_cached(client, redis_client,
                                                                        keys, monkeypatch):
    """The all-cached pass of `detail_members` trusts that only catalogue items are cached:
    an item another replica removed while its details were being read is shown this once
    (it was in the catalogue when asked) but not cached, so the next list shows no details."""
    r = await client.put("/v1/items", json=[{"item_id": "sku-a", "name": "A"},
                                            {"item_id": "sku-b", "name": "B"}])
    assert r.status_code == 200
    catalog = client._transport.app.state.services.catalog
    catalog._details.clear()
    real = catalog.redis.pipeline

    def racing_pipeline(*args, **kwargs):
        pipe = real(*args, **kwargs)
        execute = pipe.execute

        async def execute_then_reload():
            out = await execute()
            redis_client.hdel(keys.catalog_category, "sku-b")  # another replica's delete
            await catalog.load()
            return out

        pipe.execute = execute_then_reload
        return pipe

    monkeypatch.setattr(catalog.redis, "pipeline", racing_pipeline)
    first = await catalog.detail_members(["sku-a", "sku-b"])
    assert all(b'"name"' in members for members in first)
    monkeypatch.setattr(catalog.redis, "pipeline", real)
    assert "sku-b" not in catalog._details
    again = await catalog.detail_members(["sku-a", "sku-b"])
    assert b'"name":"A"' in again[0] and again[1] == b""
