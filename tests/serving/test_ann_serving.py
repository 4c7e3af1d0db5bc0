"""Serving from the approximate-search index (catalogues of `ann_min_items` or more): the
index's candidates re-scored exactly, with the same exclusions; the rows the stream's item
fold-in added since the index was built are scored beside them; a version whose index is
missing or broken is still served, by scoring every item."""

from __future__ import annotations

import anyio
import numpy as np
import pytest
import redis.asyncio as aioredis

from recsys.ann import ANN_FORMAT, build_layout, pack_layout
from recsys.modelstore import activate_version, pack_vector, stage_model_version
from serving import recommender
from serving.served_model import build_loaded_model
from stream.redis_writer import RedisWriter, WritePlan
from tests.serving.conftest import manifest, running_app, with_overrides
from tests.serving.test_api import brute_top

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


def stage_with_index(redis_client, keys, published, version: str, ann: bytes | None) -> None:
    meta = {**manifest(version, len(published.item_ids), published.item_factors.shape[1],
                       len(published.user_ids)), "ann_format": ANN_FORMAT}
    stage_model_version(redis_client, keys, version, published.item_ids,
                        published.item_factors, meta, user_ids=published.user_ids,
                        user_factors=published.user_factors, ann=ann)
    activate_version(redis_client, keys, version)


@pytest.fixture
def indexed(published, redis_client, keys):
    layout = build_layout(published.item_factors, n_lists=4, seed=0)
    stage_with_index(redis_client, keys, published, "v2", pack_layout(layout))
    return published


async def test_personalised_and_similar_from_the_index_equal_exact_scoring(
        indexed, settings, redis_client, keys):
    # every cell probed: the candidates hold the exact answer, so it must come out exactly
    ann_settings = with_overrides(settings, ann_min_items=10, ann_probe=4)
    loaded = build_loaded_model(redis_client, keys, "v2", ann_settings)
    assert loaded.ann is not None and loaded.ann.n_probe == 4
    async with running_app(ann_settings) as client:
        for user in ("u1", "u2", "u7"):
            r = await client.get(f"/v1/users/{user}/recommendations", params={"k": 5})
            body = r.json()
            assert body["source"] == "personalized" and body["model_version"] == "v2"
            got = [i["item_id"] for i in body["items"]]
            assert got == brute_top(indexed, user, 5, exclude=indexed.seen[user])
        r = await client.get("/v1/items/i00/similar", params={"k": 5})
        body = r.json()
        factors = indexed.item_factors
        norms = np.linalg.norm(factors, axis=1)
        cosine = factors @ factors[0] / (norms * norms[0])
        cosine[0] = -np.inf
        expected = [indexed.item_ids[j] for j in np.argsort(-cosine)[:5]]
        assert [i["item_id"] for i in body["items"]] == expected


async def test_a_version_with_a_broken_index_is_served_by_scoring_every_item(
        published, settings, redis_client, keys):
    stage_with_index(redis_client, keys, published, "v3", b"not an index")
    ann_settings = with_overrides(settings, ann_min_items=10)
    assert build_loaded_model(redis_client, keys, "v3", ann_settings).ann is None
    async with running_app(ann_settings) as client:
        r = await client.get("/v1/users/u1/recommendations", params={"k": 5})
        body = r.json()
        assert body["source"] == "personalized" and body["model_version"] == "v3"
        assert [i["item_id"] for i in body["items"]] == brute_top(
            published, "u1", 5, exclude=published.seen["u1"])


async def test_below_the_threshold_no_index_is_loaded(indexed, settings, redis_client, keys):
    small = with_overrides(settings, ann_min_items=len(indexed.item_ids) + 1)
    assert build_loaded_model(redis_client, keys, "v2", small).ann is None


def cosine_top(factors: np.ndarray, ids: list[str], row: int, k: int) -> list[str]:
    norms = np.linalg.norm(factors, axis=1)
    cosine = factors @ factors[row] / (norms * norms[row])
    cosine[row] = -np.inf
    return [ids[j] for j in np.argsort(-cosine, kind="stable")[:k]]


async def merged_by_the_api(client, item: str, user: str) -> None:
    """Wait until the API's fresh-item poller merged `item` (it shows in the user's list)."""
    for _ in range(100):
        r = await client.get(f"/v1/users/{user}/recommendations", params={"k": 3})
        if item in [i["item_id"] for i in r.json()["items"]]:
            return
        await anyio.sleep(0.05)
    raise AssertionError(f"{item} never reached {user}'s list")


@pytest.mark.parametrize("probe", [1, 4])
async def test_stream_item_vectors_are_reachable_through_the_index(
        indexed, settings, redis_client, redis_url, keys, probe, monkeypatch):
    """The index was built without the stream's items: they must still reach personalised
    lists and /similar, as its own rows and by their own vectors. With every cell probed
    (probe 4) the answers equal exact scoring over the whole served matrix; with one cell
    the index misses some of the version's items, never the stream's."""
    ann_settings = with_overrides(settings, ann_min_items=10, ann_probe=probe,
                                  api_fresh_items_poll_s=0.05)
    ids, factors = list(indexed.item_ids), indexed.item_factors
    user = "u1"
    x = indexed.user_factors[indexed.user_ids.index(user)]
    # "new-top": u1's best item by far; "new-twin": i20's vector, slightly turned (its
    # nearest neighbour by cosine, and i20 its own); "new-far": cosine 0.3 to i20, below
    # its stored top-5, so it must not jump ahead of the version's 6th to 8th neighbours.
    rng = np.random.default_rng(3)
    y20 = factors[ids.index("i20")]
    side = rng.standard_normal(factors.shape[1])
    side -= (side @ y20) / (y20 @ y20) * y20
    side *= np.linalg.norm(y20) / np.linalg.norm(side)
    fresh = {"new-top": (3.0 * x / np.linalg.norm(x) * np.abs(factors).max()).astype(np.float32),
             "new-twin": (y20 + 0.01 * rng.standard_normal(len(y20))).astype(np.float32),
             "new-far": (0.3 * y20 + np.sqrt(1 - 0.09) * side).astype(np.float32)}
    answered: list[str] = []  # which requests the index answered (not an exact scan)

    def spy(name):
        real = getattr(recommender, name)

        def wrapper(*args, **kwargs):
            found = real(*args, **kwargs)
            answered.append(name if found is not None else "scan")
            return found
        monkeypatch.setattr(recommender, name, wrapper)

    spy("ann_recommend")
    spy("ann_neighbours")
    writer = RedisWriter(aioredis.Redis.from_url(redis_url), keys, seen_max=10)
    try:
        async with running_app(ann_settings) as client:
            await writer.write(WritePlan(item_vectors={
                "v2": {item: pack_vector(v) for item, v in fresh.items()}}))
            await merged_by_the_api(client, "new-top", user)
            all_ids = ids + list(fresh)
            all_factors = np.vstack([factors, *fresh.values()])

            answered.clear()
            body = (await client.get(f"/v1/users/{user}/recommendations",
                                     params={"k": 5})).json()
            assert answered == ["ann_recommend"]
            assert body["source"] == "personalized" and body["model_version"] == "v2"
            got = [i["item_id"] for i in body["items"]]
            assert got[0] == "new-top" and body["items"][0]["fresh"] is True
            if probe == 4:
                scores = all_factors @ x
                seen = set(indexed.seen[user])
                expected = [all_ids[j] for j in np.argsort(-scores, kind="stable")
                            if all_ids[j] not in seen][:5]
                assert got == expected

            # A known item's /similar past its stored top-5 (k = 8: the factors' ranking
            # through the index), and a fresh item's own /similar (no stored list).
            for item in ("i20", "new-twin"):
                answered.clear()
                body = (await client.get(f"/v1/items/{item}/similar", params={"k": 8})).json()
                assert answered == ["ann_neighbours"]
                got = [i["item_id"] for i in body["items"]]
                assert len(got) == 8 and body["model_version"] == "v2"
                assert got[0] == ("new-twin" if item == "i20" else "i20")
                assert {i["item_id"] for i in body["items"] if i.get("fresh")} <= set(fresh)
                if probe == 4:
                    assert got == cosine_top(all_factors, all_ids, all_ids.index(item), 8)
    finally:
        await writer.redis.aclose()
