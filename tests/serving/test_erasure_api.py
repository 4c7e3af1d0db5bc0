"""DELETE /v1/users/{user_id} and DELETE /v1/items/{item_id} against the real Redis and
broker: behind the API key, the user's Redis state goes at once and the erase control record
reaches the interactions topic keyed by the user; a removed item leaves the catalogue, the
popularity sets and every answer, and is listed for the trainer to drop."""

from __future__ import annotations

import orjson
import pytest

from recsys.erasure import erased_user
from recsys.kafka import ensure_topics

from .conftest import running_app, with_overrides
from .test_api import brute_top
from .test_events_api import consume

pytestmark = [pytest.mark.anyio, pytest.mark.integration]
KEY = {"X-API-Key": "s3cret"}


def control_records(settings) -> list[tuple[bytes, str | None]]:
    return [(key, erased_user(orjson.dumps(value))) for key, value in consume(settings, 1)]


async def test_delete_user_erases_redis_state_and_tells_the_stream(published, settings,
                                                                   redis_client, keys):
    ensure_topics(settings)
    keyed = with_overrides(settings, api_key="s3cret")
    async with running_app(keyed) as client:
        assert (await client.delete("/v1/users/u1")).status_code == 401
        assert redis_client.hexists(keys.user_vectors("v1"), "u1")
        r = await client.delete("/v1/users/u1", headers=KEY)
        assert r.status_code == 202, r.text
        assert not redis_client.hexists(keys.user_vectors("v1"), "u1")
        assert not redis_client.exists(keys.seen("u1"))
        assert redis_client.hexists(keys.user_vectors("v1"), "u2")  # nobody else
        assert redis_client.sismember(keys.erasure_users, "u1")
        body = (await client.get("/v1/users/u1/recommendations")).json()
        assert body["source"].startswith("fallback:")
        assert (await client.delete("/v1/users/bad%01id", headers=KEY)).status_code == 422
    assert (b"u1", "u1") in control_records(settings)


async def test_delete_item_removes_it_from_catalogue_popularity_and_answers(
        published, settings, redis_client, keys):
    keyed = with_overrides(settings, api_key="s3cret")
    top = brute_top(published, "u2", 1, exclude=published.seen["u2"])[0]
    popular = max(published.popularity, key=published.popularity.get)
    async with running_app(keyed) as client:
        for item in (top, popular):
            assert (await client.put(f"/v1/items/{item}", json={"name": "x"},
                                     headers=KEY)).status_code == 200
        redis_client.zadd(keys.popularity("24h"), {popular: 1e9})
        assert (await client.delete(f"/v1/items/{top}")).status_code == 401
        for item in (top, popular):
            assert (await client.delete(f"/v1/items/{item}", headers=KEY)).status_code == 204
        got = [i["item_id"] for i in
               (await client.get("/v1/users/u2/recommendations", params={"k": 20})).json()["items"]]
        assert top not in got and popular not in got and got
        trending = (await client.get("/v1/popular", params={"k": 50})).json()["items"]
        assert popular not in [i["item_id"] for i in trending]
        assert (await client.get(f"/v1/items/{top}")).status_code == 404
    assert redis_client.zscore(keys.popularity_alltime("v1"), popular) is None
    assert redis_client.zscore(keys.popularity("24h"), popular) is None
    assert not redis_client.exists(keys.item(top))
    assert {m.decode() for m in redis_client.smembers(keys.erasure_items)} == {top, popular}
