"""Serving from the approximate-search index (catalogues of `ann_min_items` or more): the
index's candidates re-scored exactly, with the same exclusions; a version whose index is
missing or broken is still served, by scoring every item."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.ann import ANN_FORMAT, build_layout, pack_layout
from recsys.modelstore import activate_version, stage_model_version
from serving.served_model import build_loaded_model
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
