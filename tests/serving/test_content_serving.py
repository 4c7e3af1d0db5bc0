"""The content part of serving against a real Redis and the running app: the hybrid score,
new users and sessions, and the new-item cold start (a PUT item recommendable within 1 s)."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.content import content_profiles, hybrid_user_vectors, pack_content, stacked_items
from recsys.content_fit import ContentConfig, fit_content, with_blend
from recsys.item_attributes import ItemAttributes
from recsys.modelstore import activate_version, stage_model_version
from tests.serving.conftest import manifest, running_app, with_overrides

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


def _publish_with_content(redis_client, keys, fitted, blend: float, version: str = "vc1"):
    items, users, item_factors, user_factors, seen, category_of = fitted
    attrs = [ItemAttributes(item_id=i, title=f"thing {i}",
                            category_paths=((category_of[i],),)) for i in items]
    index = {item: n for n, item in enumerate(items)}
    rows = [u for u, user in enumerate(users) for _ in seen[user]]
    cols = [index[i] for user in users for i in seen[user]]
    conf = sp.csr_matrix((np.full(len(rows), 3.0, np.float32), (rows, cols)),
                         shape=(len(users), len(items)))
    model, embeddings = fit_content(attrs, item_factors, np.ones(len(items), bool), conf,
                                    ContentConfig(regularization=0.05, embedding_dims=4))
    model = with_blend(model, blend, {}, blend, {})
    meta = manifest(version, len(items), item_factors.shape[1], len(users))
    meta["content"] = {"fitted": True, "blend": blend}
    stage_model_version(redis_client, keys, version, items, item_factors, meta,
                        user_ids=users, user_factors=user_factors,
                        content=pack_content(model, embeddings))
    activate_version(redis_client, keys, version)
    now_ms = int(time.time() * 1000)
    for user, user_items in seen.items():
        redis_client.zadd(keys.seen(user), {i: now_ms - n for n, i in enumerate(user_items)})
    _published_content[version] = (model, embeddings)
    return items, category_of, seen


_published_content: dict = {}


async def test_personalised_list_is_hybrid_and_says_so(fitted, redis_client, keys,
                                                       settings) -> None:
    items, category_of, seen = _publish_with_content(redis_client, keys, fitted, blend=0.5)
    async with running_app(settings) as client:
        body = (await client.get("/v1/users/u1/recommendations", params={"k": 4})).json()
        assert body["source"] == "hybrid" and body["model_version"] == "vc1"
        liked = {category_of[i] for i in seen["u1"]}
        assert all(category_of[entry["item_id"]] in liked for entry in body["items"])
    # the core's hybrid maths (recsys.content, what evaluation and the trainer use) gives
    # the same list
    model, embeddings = _published_content["vc1"]
    _items, users, item_factors, user_factors, _seen, _cat = fitted
    index = {item: n for n, item in enumerate(items)}
    recent = [index[i] for i in seen["u1"]]  # seeded most recent first
    profile = content_profiles([np.asarray(recent)], embeddings)
    user = hybrid_user_vectors(user_factors[users.index("u1")][None, :], profile, 0.5,
                               model.factor_scale)
    scores = (stacked_items(item_factors, embeddings) @ user[0]).astype(np.float64)
    scores[recent] = -np.inf
    expected = [items[r] for r in np.argsort(-scores, kind="stable")[:4]]
    assert [entry["item_id"] for entry in body["items"]] == expected


async def test_weight_zero_keeps_the_collaborative_list(fitted, redis_client, keys,
                                                        settings) -> None:
    _publish_with_content(redis_client, keys, fitted, blend=0.0)
    async with running_app(settings) as client:
        body = (await client.get("/v1/users/u1/recommendations", params={"k": 4})).json()
        assert body["source"] == "personalized"


async def test_a_session_is_steered_by_its_items_content(fitted, redis_client, keys,
                                                         settings) -> None:
    items, category_of, _seen = _publish_with_content(redis_client, keys, fitted, blend=0.7)
    session = [i for i in items if category_of[i] == "cat3"][:2]
    async with running_app(settings) as client:
        r = await client.post("/v1/recommendations/anonymous", params={"k": 5},
                              json={"items": [{"item_id": i} for i in session]})
        body = r.json()
        assert r.status_code == 200 and body["source"] == "hybrid"
        assert all(category_of[e["item_id"]] == "cat3" for e in body["items"])
        # a user the stream has not folded in yet, with two items of cat2 seen
        now_ms = int(time.time() * 1000)
        fresh = [i for i in items if category_of[i] == "cat2"][:2]
        redis_client.zadd(keys.seen("brand-new"), {i: now_ms for i in fresh})
        body = (await client.get("/v1/users/brand-new/recommendations",
                                 params={"k": 5})).json()
        assert body["source"] == "hybrid"
        assert all(category_of[e["item_id"]] == "cat2" for e in body["items"])


async def test_new_item_is_recommendable_within_a_second_of_its_put(fitted, redis_client,
                                                                     keys, settings) -> None:
    items, category_of, seen = _publish_with_content(redis_client, keys, fitted, blend=0.5)
    fast = with_overrides(settings, api_new_items_poll_s=0.05)
    related = [i for i in items if category_of[i] == "cat1"]
    fan = next(u for u, user_items in seen.items() if category_of[user_items[0]] == "cat1")
    # two API processes' worth of state: the writer and a replica that only polls
    async with running_app(fast) as writer, running_app(fast) as replica:
        r = await writer.put("/v1/items/brand-new-1",
                             json={"name": "thing new", "category": "cat1"})
        assert r.status_code == 200
        put_at = time.perf_counter()
        while True:
            body = (await replica.get("/v1/items/brand-new-1/similar",
                                      params={"k": 5})).json()
            if body["source"] == "similar:content":
                break
            assert time.perf_counter() - put_at < 1.0, body
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - put_at
        assert elapsed < 1.0
        assert all(category_of[e["item_id"]] == "cat1" for e in body["items"])
        # it competes in /similar of related items and in personalised lists
        similar = (await replica.get(f"/v1/items/{related[0]}/similar",
                                     params={"k": 40})).json()
        assert "brand-new-1" in [e["item_id"] for e in similar["items"]]
        mine = (await replica.get(f"/v1/users/{fan}/recommendations",
                                  params={"k": 41})).json()
        assert "brand-new-1" in [e["item_id"] for e in mine["items"]]
