"""The issue's target on the real stack: broker, a `recsys stream` worker process, Redis and
the API. A new item with five interactions from users who have vectors appears, flagged
fresh, in /similar of the item they co-interacted with and in a personalised list within
1 s of the fifth event, with no model reload."""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
import pytest
import redis

from recsys.events import Event
from recsys.keys import Keys
from tests.serving.conftest import running_app
from tests.stream.conftest import WorkerProcess, produce, publish

log = logging.getLogger(__name__)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.anyio
async def test_a_new_item_reaches_similar_and_personalised_lists_within_a_second(
        settings, redis_url, tmp_path, clustered):
    client = redis.Redis.from_url(redis_url)
    keys = Keys(settings.redis_namespace)
    users = [f"u{n}" for n in range(clustered.als.user_factors.shape[0])]
    publish(client, keys, "v1", clustered, user_ids=users,
            user_factors=np.asarray(clustered.als.user_factors, dtype=np.float32))
    anchor = clustered.items_of(4)[0]
    # Cluster-4 users (u4, u10, ...: the trainer fitted their vectors); u(4 + 6*9) does not
    # touch the new item and is the one whose personalised list should show it. Five
    # add-to-carts make a short vector next to items fitted on ~100 users each: the new item
    # ranks among the cluster's 40 items, not at its top, hence k = 50 (docs/stream.md); by
    # cosine it is about the 14th neighbour of the anchor (no stored list here: /similar
    # ranks every row by cosine), hence k = 20 there.
    buyers = [f"u{4 + 6 * n}" for n in range(5)]
    reader = f"u{4 + 6 * 9}"
    worker = WorkerProcess(settings, tmp_path, "itemvec")
    try:
        await asyncio.to_thread(worker.wait_assigned)
        async with running_app(settings) as http:
            # Warm the path (a known item) so the clock below measures the new item only.
            await asyncio.to_thread(produce, settings, [Event.create(buyers[0], anchor, "view")])
            for n, user in enumerate(buyers[:4]):
                await asyncio.to_thread(produce, settings, [
                    Event.create(user, "launch-1", "addtocart", event_id=f"l-{n}")])
            await asyncio.to_thread(produce, settings, [
                Event.create(buyers[4], "launch-1", "addtocart", event_id="l-4")])
            fifth = time.monotonic()
            similar_at = personal_at = None
            while time.monotonic() - fifth < 5.0 and (similar_at is None or personal_at is None):
                if similar_at is None:
                    body = (await http.get(f"/v1/items/{anchor}/similar?k=20")).json()
                    hit = [i for i in body["items"] if i["item_id"] == "launch-1"]
                    if hit:
                        assert hit[0]["fresh"] is True and body["model_version"] == "v1"
                        similar_at = time.monotonic() - fifth
                if personal_at is None:
                    body = (await http.get(f"/v1/users/{reader}/recommendations?k=50")).json()
                    hit = [i for i in body["items"] if i["item_id"] == "launch-1"]
                    if hit:
                        assert hit[0]["fresh"] is True and body["source"] == "personalized"
                        personal_at = time.monotonic() - fifth
                await asyncio.sleep(0.02)
            assert similar_at is not None and similar_at < 1.0, similar_at
            assert personal_at is not None and personal_at < 1.0, personal_at
            log.info("fifth event -> /similar %.3fs, personalised %.3fs", similar_at,
                     personal_at)
            # An anonymous session of cluster-4 items scores the new item too (flagged), ahead
            # of most items of the other clusters.
            body = (await http.post("/v1/recommendations/anonymous?k=500", json={
                "items": [{"item_id": i} for i in clustered.items_of(4)[1:4]]})).json()
            ids = [i["item_id"] for i in body["items"]]
            assert [i["item_id"] for i in body["items"] if i.get("fresh")] == ["launch-1"]
            others = [i for i in ids if i != "launch-1" and clustered.cluster[i] != 4]
            below = [i for i in ids[ids.index("launch-1"):] if i in others]
            assert len(below) > 0.5 * len(others)
            assert worker.metric("recsys_stream_item_foldin_items_total") >= 1
    finally:
        worker.stop()
        client.close()
