"""Invariant 2 under load: a model switch while hundreds of requests are in flight gives no
error and no response that mixes two versions."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import orjson
import pytest

from recsys.modelstore import activate_version
from tests.serving.conftest import manifest, publish, running_app

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

N_ITEMS = 200
N_USERS = 20
K = 10


def version_factors(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Version A ranks items 0-99 first, version B items 100-199, and B has more factors, so a
    B vector scored against A's items (or the reverse) could not look like either."""
    half = np.arange(N_ITEMS) < N_ITEMS // 2
    ramp = 1.0 + np.arange(N_ITEMS) / 1000.0  # distinct scores, best = highest index
    if name == "A":
        items = np.zeros((N_ITEMS, 4), dtype=np.float32)
        items[half, 0] = ramp[half]
        items[~half, 1] = ramp[~half]
        users = np.zeros((N_USERS, 4), dtype=np.float32)
        users[:, 0] = 1.0 + np.arange(N_USERS)
    else:
        items = np.zeros((N_ITEMS, 6), dtype=np.float32)
        items[~half, 2] = ramp[~half]
        items[half, 3] = ramp[half]
        users = np.zeros((N_USERS, 6), dtype=np.float32)
        users[:, 2] = 2.0 + np.arange(N_USERS)
    return items, users


@pytest.fixture
def settings(settings):
    # These tests check that answers never mix versions, not latency: on a loaded machine
    # 200 concurrent clients can outlast the request path's Redis timeout, and a fallback
    # answer says nothing about versions.
    return settings.model_copy(update={"api_redis_timeout_s": 5.0})


def expected(name: str, user: int) -> tuple[list[str], list[float]]:
    items, users = version_factors(name)
    scores = items @ users[user]
    order = np.argsort(-scores, kind="stable")[:K]
    return [f"i{r}" for r in order], [float(scores[r]) for r in order]


async def test_switch_under_concurrent_requests_never_mixes_versions(settings, redis_client,
                                                                     keys):
    item_ids = [f"i{r}" for r in range(N_ITEMS)]
    user_ids = [f"u{n}" for n in range(N_USERS)]
    items_a, users_a = version_factors("A")
    publish(redis_client, keys, "A", item_ids, items_a, user_ids, users_a)
    truth = {(v, n): expected(v, n) for v in "AB" for n in range(N_USERS)}

    async with running_app(settings) as client:
        assert (await client.get("/readyz")).json()["model_version"] == "A"
        responses: list[tuple[int, int, dict]] = []
        stop = asyncio.Event()

        async def worker(n: int) -> None:
            while not stop.is_set():
                user = n % N_USERS
                r = await client.get(f"/v1/users/u{user}/recommendations", params={"k": K})
                responses.append((user, r.status_code, r.json()))

        workers = [asyncio.create_task(worker(n)) for n in range(200)]

        async def until(condition, timeout: float = 20.0) -> None:
            deadline = time.monotonic() + timeout
            while not condition() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)

        await until(lambda: len(responses) >= 200)  # every client has had answers from A
        items_b, users_b = version_factors("B")
        # The trainer's publish path, from another thread, while requests are in flight.
        await asyncio.to_thread(publish, redis_client, keys, "B", item_ids, items_b, user_ids,
                                users_b)
        switched_at = len(responses)
        await until(lambda: sum(body.get("model_version") == "B"
                                for _, _, body in responses[switched_at:]) >= 200)
        stop.set()
        await asyncio.gather(*workers)

    assert len(responses) >= 400
    seen_versions = set()
    for user, status, body in responses:
        assert status == 200, body
        assert body["source"] == "personalized", body
        version = body["model_version"]
        seen_versions.add(version)
        ids, scores = truth[(version, user)]
        assert [i["item_id"] for i in body["items"]] == ids
        assert [i["score"] for i in body["items"]] == pytest.approx(scores, rel=1e-6)
    assert seen_versions == {"A", "B"}
    assert responses[-1][2]["model_version"] == "B"


async def test_a_broken_version_is_not_swapped_in(settings, redis_client, keys):
    item_ids = [f"i{r}" for r in range(N_ITEMS)]
    items_a, users_a = version_factors("A")
    publish(redis_client, keys, "A", item_ids, items_a, [f"u{n}" for n in range(N_USERS)],
            users_a)
    async with running_app(settings) as client:
        # A version whose factor bytes do not match its manifest (a torn or corrupt write).
        redis_client.set(keys.model_item_ids("bad"), "\n".join(item_ids))
        redis_client.set(keys.model_item_factors("bad"), b"\x00" * 12)
        redis_client.set(keys.model_manifest("bad"), orjson.dumps(manifest("bad", N_ITEMS, 4)))
        activate_version(redis_client, keys, "bad")
        for _ in range(100):
            text = (await client.get("/metrics")).text
            if "recsys_api_model_load_failures_total 1.0" in text:
                break
            await asyncio.sleep(0.02)
        assert "recsys_api_model_load_failures_total 1.0" in text
        body = (await client.get("/v1/users/u3/recommendations", params={"k": K})).json()
        assert body["model_version"] == "A" and body["source"] == "personalized"
        assert [i["item_id"] for i in body["items"]] == expected("A", 3)[0]
