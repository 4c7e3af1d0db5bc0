"""Item fold-in in the stream (stream.item_foldin) through the batch processor against the
real Redis: vectors for items the served version does not know, under that version; the
bad input of the issue (users without vectors, a bot burst, an erased item); a switch."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from recsys.confidence import confidence
from recsys.erasure import remove_item_commands
from recsys.foldin import fold_in_items, gram
from recsys.keys import Keys
from recsys.modelstore import aload_model, unpack_vector
from stream import telemetry
from tests.stream.conftest import ALPHA, FACTORS, REGULARIZATION, publish, relative_error
from tests.stream.test_processor import Harness, _events

pytestmark = pytest.mark.integration


def _publish_with_users(redis_client, keys, version, model):
    users = [f"u{n}" for n in range(model.als.user_factors.shape[0])]
    publish(redis_client, keys, version, model, user_ids=users,
            user_factors=np.asarray(model.als.user_factors, dtype=np.float32))
    return users


def _cluster_share(model, vector, cluster):
    """Share of the vector's 10 nearest items (cosine) that belong to `cluster`."""
    norms = np.linalg.norm(model.factors, axis=1) * np.linalg.norm(vector)
    top = np.argsort(-(model.factors @ vector) / norms)[:10]
    return np.mean([model.cluster[model.item_ids[r]] == cluster for r in top])


async def _item_vector(h, version, item):
    raw = await h.redis.hget(h.keys.item_vectors(version), item)
    return None if raw is None else unpack_vector(raw, FACTORS)


def test_a_new_item_gets_the_item_half_step_under_the_served_version(
        settings, redis_url, redis_client, clustered):
    keys = Keys(settings.redis_namespace)
    _publish_with_users(redis_client, keys, "v1", clustered)

    async def scenario():
        h = Harness(settings, redis_url)
        h.holder.swap(await aload_model(h.redis, h.keys))
        # Users of cluster 2 (u2, u8, ...) view a known item and a new one; u5000 is new to
        # the version and touches only the new item: no vector, skipped (counted).
        users = [f"u{2 + 6 * n}" for n in range(5)]
        events = []
        for n, user in enumerate(users):
            events += _events(user, [clustered.items_of(2)[n], "new-1"],
                              ["view", "addtocart"], prefix=f"{user}-a")
        events += _events("u5000", ["new-1"], prefix="u5000-a")
        skipped = telemetry.ITEM_FOLDIN_USERS_SKIPPED._value.get()
        await h.processor.process(h.records(events))
        got = await _item_vector(h, "v1", "new-1")
        assert got is not None
        assert telemetry.ITEM_FOLDIN_USERS_SKIPPED._value.get() - skipped == 1

        # Expected: the item half-step against the users' vectors as just folded in, with
        # XtX of the version's user factors and the same confidence rule.
        vectors = [await h.vector("v1", u) for u in users]
        conf = np.asarray(confidence(np.full(5, settings.event_weights["addtocart"]), ALPHA))
        expected = fold_in_items(gram(clustered.als.user_factors), REGULARIZATION,
                                 [(np.stack(vectors), conf)])[0]
        assert relative_error(got, expected) < 1e-5
        # It lands near cluster 2's items, the version's own factors.
        assert _cluster_share(clustered, got, 2) >= 0.5  # chance: 1 in 6
        seq = int(await h.redis.get(h.keys.item_vectors_seq("v1")))
        assert await h.redis.zscore(h.keys.item_vectors_updated("v1"), "new-1") == seq
        await h.redis.aclose()

    asyncio.run(scenario())


def test_bots_erased_items_and_users_without_vectors_cost_bounded_work(
        settings, redis_url, redis_client, clustered):
    settings = settings.model_copy(update={"stream_item_foldin_max_users": 20})
    keys = Keys(settings.redis_namespace)
    _publish_with_users(redis_client, keys, "v1", clustered)
    pipe = redis_client.pipeline()
    remove_item_commands(pipe, keys, "gone", ["v1"])
    pipe.execute()

    async def scenario():
        h = Harness(settings, redis_url)
        h.holder.swap(await aload_model(h.redis, h.keys))
        bounded = telemetry.ITEM_FOLDIN_USERS_BOUNDED._value.get()
        erased = telemetry.ITEM_FOLDIN_SKIPPED.labels("erased")._value.get()
        few = telemetry.ITEM_FOLDIN_SKIPPED.labels("too_few_users")._value.get()
        # 300 bots (no vectors) hammer one item; a removed item; an item whose only users
        # have no vectors.
        bots = [e for n in range(300) for e in _events(f"bot{n}", ["hot"] * 3,
                                                         prefix=f"bot{n}")]
        result = await h.processor.process(
            h.records(bots + _events("u1", ["gone"]) + _events("nobody", ["lonely"])))
        assert result.outcomes["unknown_item"] == 300 * 3 + 2
        assert telemetry.ITEM_FOLDIN_USERS_BOUNDED._value.get() - bounded == 280
        assert await h.redis.zcard(h.keys.item_users("hot")) == 20
        assert await h.redis.hlen(h.keys.item_confidences("hot")) == 20
        assert not await h.redis.exists(h.keys.item_users("gone"))
        assert telemetry.ITEM_FOLDIN_SKIPPED.labels("erased")._value.get() - erased == 1
        assert telemetry.ITEM_FOLDIN_SKIPPED.labels("too_few_users")._value.get() - few == 2
        assert not await h.redis.exists(h.keys.item_vectors("v1"))
        # Real users then arrive on the hot item: the bots stay bounded, the item is folded.
        users = [f"u{6 * n}" for n in range(4)]
        await h.processor.process(h.records(
            [e for u in users for e in _events(u, [clustered.items_of(0)[1], "hot"],
                                               prefix=f"{u}-h")]))
        assert await _item_vector(h, "v1", "hot") is not None
        assert await h.redis.zcard(h.keys.item_users("hot")) == 20
        await h.redis.aclose()

    asyncio.run(scenario())


def test_a_switch_starts_afresh_and_refolds_the_items_the_new_version_lacks(
        settings, redis_url, redis_client, clustered, clustered_v2):
    keys = Keys(settings.redis_namespace)
    _publish_with_users(redis_client, keys, "v1", clustered)

    async def scenario():
        h = Harness(settings, redis_url)
        h.holder.swap(await aload_model(h.redis, h.keys))
        users = [f"u{3 + 6 * n}" for n in range(4)]
        await h.processor.process(h.records(
            [e for u in users for e in _events(u, [clustered.items_of(3)[0], "new-3"],
                                               prefix=f"{u}-s")]))
        old = await _item_vector(h, "v1", "new-3")
        assert old is not None
        _publish_with_users(redis_client, keys, "v2", clustered_v2)
        refolded = telemetry.REFOLDED_ITEMS._value.get()
        await h.processor.switch_to(await aload_model(h.redis, h.keys))
        assert telemetry.REFOLDED_ITEMS._value.get() - refolded == 1
        new = await _item_vector(h, "v2", "new-3")
        assert new is not None and not np.allclose(new, old)
        # Under v2 it sits with v2's cluster-3 items.
        assert _cluster_share(clustered_v2, new, 3) >= 0.5
        await h.redis.aclose()

    asyncio.run(scenario())


def test_a_version_published_without_its_user_gram_gets_it_from_its_user_vectors(
        settings, redis_url, redis_client, clustered):
    keys = Keys(settings.redis_namespace)
    _publish_with_users(redis_client, keys, "v1", clustered)
    redis_client.delete(keys.model_user_gram("v1"))

    async def scenario():
        h = Harness(settings, redis_url)
        h.holder.swap(await aload_model(h.redis, h.keys))
        users = [f"u{1 + 6 * n}" for n in range(3)]
        await h.processor.process(h.records(
            [e for u in users for e in _events(u, ["new-g"], prefix=f"{u}-g")]))
        # Their stream histories hold no known item: the trainer's vectors are used.
        conf = np.asarray(confidence(np.full(3, settings.event_weights["view"]), ALPHA))
        expected = fold_in_items(gram(clustered.als.user_factors), REGULARIZATION,
                                 [(clustered.als.user_factors[[1, 7, 13]], conf)])[0]
        assert relative_error(await _item_vector(h, "v1", "new-g"), expected) < 1e-4
        await h.redis.aclose()

    asyncio.run(scenario())
