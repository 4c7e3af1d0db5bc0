"""The integration API (issue #18): explanations, scores of a list, known items, catalogue
listing, paging and batches; over the real app, a real Redis and a real fitted model."""

from __future__ import annotations

import time

import numpy as np
import pytest

from recsys.explain import contributions
from recsys.foldin import fold_in, gram
from recsys.modelstore import pack_vector
from tests.serving.conftest import running_app, with_overrides

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

REGULARIZATION = 0.05  # the test manifest's


def write_fold_in_user(redis_client, keys, published, user, items, conf):
    """A user whose vector is the stream's fold-in over `items` with confidences `conf`."""
    y = published.item_factors
    rows = np.array([published.item_ids.index(i) for i in items])
    vector = fold_in(y, gram(y), REGULARIZATION, rows, np.asarray(conf, dtype=np.float64))
    redis_client.hset(keys.user_vectors(published.version), user, pack_vector(vector))
    now = int(time.time() * 1000)
    redis_client.zadd(keys.seen(user), {item: now - n for n, item in enumerate(items)})
    return rows, vector


# --- explanations ---------------------------------------------------------------------------
async def test_because_lists_the_fold_in_contributions_that_sum_to_the_score(
        published, client, redis_client, keys):
    items = ["i00", "i01", "i02", "i13", "i25"]
    conf = [3.0, 9.0, 1.5, 17.0, 5.0]
    rows, vector = write_fold_in_user(redis_client, keys, published, "fold", items, conf)
    target = "i05"
    target_row = published.item_ids.index(target)
    r = await client.get(f"/v1/users/fold/recommendations/{target}/because", params={"k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    y = published.item_factors
    expected = contributions(y, gram(y), REGULARIZATION, target_row, rows, np.array(conf))
    score = float(y[target_row] @ vector)
    assert body["score"] == pytest.approx(score, rel=1e-5)
    assert body["explained_score"] == pytest.approx(score, rel=1e-3, abs=1e-5)
    assert body["residual"] < 1e-3
    by_item = dict(zip(items, expected, strict=True))
    ranked = sorted(items, key=lambda i: -by_item[i])[:3]
    assert [i["item_id"] for i in body["items"]] == ranked
    for entry in body["items"]:
        assert entry["contribution"] == pytest.approx(by_item[entry["item_id"]], rel=1e-3,
                                                      abs=1e-6)
        assert entry["confidence"] == pytest.approx(conf[items.index(entry["item_id"])],
                                                    rel=1e-3)


async def test_because_for_a_trained_user_says_how_far_it_is_from_a_fold_in(published, client):
    r = await client.get("/v1/users/u1/recommendations/i15/because")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["score"] == pytest.approx(
        float(published.scores("u1")[published.item_ids.index("i15")]), rel=1e-5)
    assert {i["item_id"] for i in body["items"]} <= set(published.seen["u1"])
    assert body["residual"] >= 0.0


async def test_because_unknown_item_user_and_bad_k(published, client):
    r = await client.get("/v1/users/u1/recommendations/nope/because")
    assert r.status_code == 404 and "nope" in r.json()["detail"]
    r = await client.get("/v1/users/stranger/recommendations/i15/because")
    assert r.status_code == 404 and "unknown_user" in r.json()["detail"]
    r = await client.get("/v1/users/u1/recommendations/i15/because", params={"k": 0})
    assert r.status_code == 422 and "k" in r.json()["detail"]


# --- scores of a list -------------------------------------------------------------------------
async def test_scores_in_request_order_with_unknown_items_marked(published, client):
    ids = ["i31", "missing", "i02", "i12"]
    r = await client.post("/v1/users/u2/scores", json={"item_ids": ids})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["source"] == "personalized" and body["model_version"] == "v1"
    assert [i["item_id"] for i in body["items"]] == ids
    scores = published.scores("u2")
    for entry in body["items"]:
        if entry["item_id"] == "missing":
            assert entry == {"item_id": "missing", "score": None, "known": False}
        else:
            assert entry["known"] is True
            assert entry["score"] == pytest.approx(
                float(scores[published.item_ids.index(entry["item_id"])]), rel=1e-5)


async def test_scores_of_a_user_without_vector_are_null_with_the_reason(published, client):
    r = await client.post("/v1/users/stranger/scores", json={"item_ids": ["i01"]})
    assert r.status_code == 200
    body = r.json()
    assert body["source"] == "none:unknown_user"
    assert body["items"] == [{"item_id": "i01", "score": None, "known": True}]


async def test_scores_bounds(published, settings):
    async with running_app(with_overrides(settings, api_max_score_items=3)) as client:
        r = await client.post("/v1/users/u1/scores", json={"item_ids": ["a", "b", "c", "d"]})
        assert r.status_code == 422 and "item_ids" in r.json()["detail"]
        r = await client.post("/v1/users/u1/scores", json={"item_ids": []})
        assert r.status_code == 422 and "item_ids" in r.json()["detail"]
        r = await client.post("/v1/users/u1/scores", json={"item_ids": ["a\x01"]})
        assert r.status_code == 422 and "item_ids" in r.json()["detail"]
        r = await client.post("/v1/users/u1/scores", json={"items": ["a"]})
        assert r.status_code == 422


# --- known items and the catalogue ------------------------------------------------------------
async def test_user_items_most_recent_first_paged(published, client):
    seen = published.seen["u4"]  # the fixture's times: first item most recent
    r = await client.get("/v1/users/u4/items", params={"limit": 4})
    body = r.json()
    assert r.status_code == 200 and body["total"] == len(seen)
    assert [i["item_id"] for i in body["items"]] == seen[:4]
    assert all(i["in_model"] for i in body["items"])
    r = await client.get("/v1/users/u4/items", params={"limit": 4, "offset": 4})
    assert [i["item_id"] for i in r.json()["items"]] == seen[4:8]
    r = await client.get("/v1/users/nobody/items")
    assert r.json()["total"] == 0 and r.json()["items"] == []


async def test_listing_bounds_name_the_parameter(published, settings):
    async with running_app(with_overrides(settings, api_max_page_size=5)) as client:
        for path in ("/v1/items", "/v1/users/u1/items"):
            r = await client.get(path, params={"limit": 6})
            assert r.status_code == 422 and "limit" in r.json()["detail"]
            r = await client.get(path, params={"offset": -1})
            assert r.status_code == 422 and "offset" in r.json()["detail"]
            r = await client.get(path, params={"limit": "x"})
            assert r.status_code == 422 and "limit" in r.json()["detail"]


async def test_catalogue_pages_tile_the_sorted_catalogue(published, client):
    items = sorted(published.item_ids[:13])
    r = await client.put("/v1/items", json=[
        {"item_id": i, "name": f"Item {i}", "category": published.category_of[i]}
        for i in items])
    assert r.status_code == 200, r.text
    got, offset = [], 0
    while True:
        r = await client.get("/v1/items", params={"limit": 5, "offset": offset})
        body = r.json()
        assert body["total"] == len(items)
        if not body["items"]:
            break
        got += body["items"]
        offset += 5
    assert [i["item_id"] for i in got] == items
    assert got[0]["name"] == f"Item {items[0]}" and got[0]["price"] is None
    r = await client.get("/v1/items", params={"category": "cat1"})
    assert [i["item_id"] for i in r.json()["items"]] == [
        i for i in items if published.category_of[i] == "cat1"]


# --- paging -------------------------------------------------------------------------------------
async def test_pages_of_the_personalised_list_tile_the_ranking(published, client):
    whole = await client.get("/v1/users/u5/recommendations", params={"k": 15})
    expected = [i["item_id"] for i in whole.json()["items"]]
    scores = published.scores("u5")
    unseen = [n for n, i in enumerate(published.item_ids) if i not in published.seen["u5"]]
    assert expected == [published.item_ids[n]
                        for n in sorted(unseen, key=lambda n: (-scores[n], n))[:15]]
    pages = []
    for offset in (0, 5, 10):
        r = await client.get("/v1/users/u5/recommendations",
                             params={"k": 5, "offset": offset})
        assert r.status_code == 200 and r.json()["source"] == "personalized"
        pages += [i["item_id"] for i in r.json()["items"]]
    assert pages == expected


async def test_paged_fallback_and_offset_bound(published, settings):
    async with running_app(with_overrides(settings, api_max_offset=20)) as client:
        whole = await client.get("/v1/users/stranger/recommendations", params={"k": 6})
        page = await client.get("/v1/users/stranger/recommendations",
                                params={"k": 3, "offset": 3})
        assert page.json()["source"].startswith("fallback:")
        assert ([i["item_id"] for i in page.json()["items"]]
                == [i["item_id"] for i in whole.json()["items"]][3:6])
        r = await client.get("/v1/users/u1/recommendations", params={"offset": 21})
        assert r.status_code == 422 and "offset" in r.json()["detail"]


# --- batch ------------------------------------------------------------------------------------
async def test_batch_equals_one_request_per_user(published, client):
    users = ["u1", "stranger", "u7", "u1"]
    r = await client.post("/v1/recommendations/batch",
                          json={"user_ids": users, "k": 4, "category": None})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["user_id"] for x in results] == users
    for user, result in zip(users, results, strict=True):
        single = (await client.get(f"/v1/users/{user}/recommendations",
                                   params={"k": 4})).json()
        assert result["source"] == single["source"]
        assert [i["item_id"] for i in result["items"]] == [i["item_id"] for i in single["items"]]
        for a, b in zip(result["items"], single["items"], strict=True):
            assert a["score"] == pytest.approx(b["score"], rel=1e-5)


async def test_batch_bounds(published, settings):
    async with running_app(with_overrides(settings, api_max_batch_users=2, api_max_k=5)
                           ) as client:
        r = await client.post("/v1/recommendations/batch", json={"user_ids": ["a", "b", "c"]})
        assert r.status_code == 422 and "user_ids" in r.json()["detail"]
        r = await client.post("/v1/recommendations/batch", json={"user_ids": ["a"], "k": 6})
        assert r.status_code == 422 and "k" in r.json()["detail"]
        r = await client.post("/v1/recommendations/batch", json={"user_ids": []})
        assert r.status_code == 422 and "user_ids" in r.json()["detail"]
        r = await client.post("/v1/recommendations/batch", json={"user_ids": "u1"})
        assert r.status_code == 422 and "user_ids" in r.json()["detail"]


# --- negative feedback --------------------------------------------------------------------
async def test_hidden_items_never_come_back_whatever_exclude_seen_says(
        published, client, redis_client, keys):
    r = await client.get("/v1/users/u2/recommendations", params={"k": 5, "exclude_seen": False})
    top = [i["item_id"] for i in r.json()["items"]]
    redis_client.sadd(keys.hidden("u2"), top[0], top[2])
    for params in ({"k": 5, "exclude_seen": False}, {"k": 5}):
        r = await client.get("/v1/users/u2/recommendations", params=params)
        got = [i["item_id"] for i in r.json()["items"]]
        assert r.json()["source"] == "personalized" and len(got) == 5
        assert top[0] not in got and top[2] not in got
    batch = await client.post("/v1/recommendations/batch",
                              json={"user_ids": ["u2"], "k": 5, "exclude_seen": False})
    assert [i["item_id"] for i in batch.json()["results"][0]["items"]] == [
        i["item_id"] for i in (await client.get(
            "/v1/users/u2/recommendations", params={"k": 5, "exclude_seen": False})
        ).json()["items"]]
    # A user without a vector: the fallback leaves them out too.
    plain = await client.get("/v1/users/stranger2/recommendations", params={"k": 3})
    first = plain.json()["items"][0]["item_id"]
    redis_client.sadd(keys.hidden("stranger2"), first)
    again = await client.get("/v1/users/stranger2/recommendations", params={"k": 3})
    assert again.json()["source"].startswith("fallback:")
    assert first not in [i["item_id"] for i in again.json()["items"]]


async def test_a_dislike_in_an_anonymous_session_is_negative_feedback(published, client):
    liked = {"items": [{"item_id": "i00", "event_type": "view"},
                       {"item_id": "i21", "event_type": "view"}]}
    disliked = {"items": [{"item_id": "i00", "event_type": "view"},
                          {"item_id": "i21", "event_type": "dislike"}]}
    a = (await client.post("/v1/recommendations/anonymous", params={"k": 40}, json=liked)).json()
    b = (await client.post("/v1/recommendations/anonymous", params={"k": 40},
                           json=disliked)).json()
    rank_a = [i["item_id"] for i in a["items"]]
    rank_b = [i["item_id"] for i in b["items"]]
    # Category 2's items (i2x) fall when i21 is disliked instead of viewed.
    mean = lambda ranks: np.mean([n for n, i in enumerate(ranks) if i.startswith("i2")])  # noqa: E731
    assert mean(rank_b) > mean(rank_a)


async def test_because_refuses_a_neural_version_with_409(fitted, settings, redis_client, keys):
    from recsys.sequence_model import random_weights
    from tests.serving.test_neural import WINDOW, publish_neural

    items, users, item_factors, user_factors, _seen, _cat = fitted
    publish_neural(redis_client, keys, "n1", items, item_factors,
                   random_weights(item_factors.shape[1], WINDOW, 8, seed=1),
                   users=users, user_factors=user_factors)
    async with running_app(settings) as client:
        r = await client.get(f"/v1/users/{users[0]}/recommendations/{items[0]}/because")
        assert r.status_code == 409 and "neural" in r.json()["detail"]
        # Scores and batches need only the vectors: they work under any version.
        r = await client.post(f"/v1/users/{users[0]}/scores", json={"item_ids": [items[0]]})
        assert r.status_code == 200 and r.json()["items"][0]["score"] == pytest.approx(
            float(item_factors[0] @ user_factors[0]), rel=1e-5)
