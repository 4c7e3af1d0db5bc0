"""The stream's item vectors in the served matrix (serving.fresh_items): the merge keeps the
version's rows and row numbers, replaces what it merged before, and the poller picks up
exactly what the stream's writer stamped, under the served version only."""

from __future__ import annotations

import numpy as np
import pytest
import redis.asyncio as aioredis

from recsys.modelstore import pack_vector
from serving.fresh_items import FreshItemPoller, with_fresh_items
from serving.served_model import build_loaded_model
from serving.telemetry import ApiMetrics
from stream.redis_writer import RedisWriter, WritePlan

pytestmark = pytest.mark.integration


class Holder:
    def __init__(self, current):
        self.current = current


def test_merge_appends_new_items_replaces_merged_ones_and_leaves_the_version_alone(
        published, redis_client, keys, settings):
    loaded = build_loaded_model(redis_client, keys, "v1", settings)
    n, k = loaded.item_factors.shape
    known = loaded.item_ids[0]
    first = with_fresh_items(loaded, {"new-a": np.ones(k, np.float32),
                                      known: np.zeros(k, np.float32)})
    assert first.n_model_items == n and first.item_ids[n:] == ["new-a"]
    assert np.array_equal(first.item_factors[:n], loaded.item_factors)  # the version's rows
    assert first.index["new-a"] == n and first.fresh_among([known, "new-a"]) == ["new-a"]
    assert first.norms[n] == pytest.approx(np.sqrt(k)) and len(first.popular_rank) == n + 1
    assert first.model.yty is loaded.model.yty
    second = with_fresh_items(first, {"new-a": np.full(k, 2, np.float32),
                                      "new-b": np.ones(k, np.float32)})
    assert second.item_ids[n:] == ["new-a", "new-b"] and second.n_fresh == 2
    assert np.all(second.item_factors[n] == 2) and first.item_factors[n][0] == 1  # a copy
    assert loaded.n_fresh == 0 and len(loaded.item_ids) == n


@pytest.mark.anyio
async def test_the_poller_merges_what_the_stream_wrote_under_the_served_version(
        published, redis_client, keys, settings, redis_url):
    loaded = build_loaded_model(redis_client, keys, "v1", settings)
    k = loaded.factors
    client = aioredis.Redis.from_url(redis_url)
    writer = RedisWriter(client, keys, seen_max=10)
    holder = Holder(loaded)
    poller = FreshItemPoller(holder, client, keys, 0.1, ApiMetrics())
    try:
        assert await poller.poll_once() == 0 and holder.current is loaded
        await writer.write(WritePlan(item_vectors={
            "v1": {"new-a": pack_vector(np.ones(k))},
            "v0": {"old-version-item": pack_vector(np.ones(k))}}))
        assert await poller.poll_once() == 1
        assert holder.current.fresh_among(["new-a", "old-version-item"]) == ["new-a"]
        assert await poller.poll_once() == 0  # nothing new: no copy
        await writer.write(WritePlan(item_vectors={"v1": {"new-b": pack_vector(np.ones(k))}}))
        assert await poller.poll_once() == 1
        assert holder.current.item_ids[-2:] == ["new-a", "new-b"]
    finally:
        await client.aclose()
