"""Serving a neural model version: anonymous sessions go through the version's user tower
(the stream's maths), and a neural version this code cannot read is not swapped in."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from recsys.modelstore import activate_version, stage_model_version
from recsys.sequence_model import UserTower, pack_tower, random_weights, tower_manifest
from tests.serving.conftest import manifest, running_app

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

WINDOW = 3


def publish_neural(redis_client, keys, version, items, factors, weights, users=(),
                   user_factors=None, tower_format=None) -> None:
    meta = {**manifest(version, len(items), factors.shape[1], len(users)),
            "model_kind": "neural", "tower": tower_manifest(WINDOW, factors.shape[1], 8)}
    if tower_format:
        meta["tower"]["format"] = tower_format
    stage_model_version(redis_client, keys, version, items, factors, meta,
                        user_ids=list(users) or None, user_factors=user_factors,
                        tower=pack_tower(weights))
    activate_version(redis_client, keys, version)


async def test_anonymous_session_uses_the_versions_tower(fitted, settings, redis_client, keys):
    items, _users, item_factors, _uf, _seen, _cat = fitted
    weights = random_weights(item_factors.shape[1], WINDOW, 8, seed=1)
    publish_neural(redis_client, keys, "n1", items, item_factors, weights)
    # oldest first; i30 again at the end (its last touch counts), an unknown item skipped,
    # and four known items for a window of three: i31 drops out
    session = ["i31", "i30", "i32", "unknown-item", "i33", "i30"]
    async with running_app(settings) as client:
        r = await client.post("/v1/recommendations/anonymous", params={"k": 5},
                              json={"items": [{"item_id": i} for i in session]})
    body = r.json()
    assert r.status_code == 200 and body["source"] == "anonymous"
    assert body["model_version"] == "n1"
    tower = UserTower(item_factors, weights)
    rows = [items.index(i) for i in ("i32", "i33", "i30")]
    scores = item_factors @ tower.user_vectors([np.array(rows)])[0]
    exclude = {items.index(i) for i in ("i30", "i31", "i32", "i33")}
    want = [items[r] for r in np.argsort(-scores) if r not in exclude][:5]
    assert [i["item_id"] for i in body["items"]] == want
    got = [i["score"] for i in body["items"]]
    np.testing.assert_allclose(got, [scores[items.index(i)] for i in want], rtol=1e-4)


async def test_a_neural_version_with_an_unknown_tower_format_is_not_swapped_in(
        fitted, settings, redis_client, keys):
    items, _users, item_factors, _uf, _seen, _cat = fitted
    weights = random_weights(item_factors.shape[1], WINDOW, 8, seed=2)
    publish_neural(redis_client, keys, "n1", items, item_factors, weights)
    async with running_app(settings) as client:
        publish_neural(redis_client, keys, "n2", items, item_factors, weights,
                       tower_format="sasrec9-npz")
        for _ in range(200):
            text = (await client.get("/metrics")).text
            if "recsys_api_model_load_failures_total 1.0" in text:
                break
            await asyncio.sleep(0.02)
        assert "recsys_api_model_load_failures_total 1.0" in text
        r = await client.post("/v1/recommendations/anonymous",
                              json={"items": [{"item_id": "i30"}]})
        assert r.status_code == 200 and r.json()["model_version"] == "n1"
