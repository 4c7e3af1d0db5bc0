"""Concurrent personalised requests share one pass over the factors, never across versions."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from serving.score_batching import ScoringBatcher

pytestmark = pytest.mark.anyio

rng = np.random.default_rng(3)
VERSION_A = rng.normal(size=(3000, 8)).astype(np.float32)
VERSION_B = rng.normal(size=(3000, 8)).astype(np.float32)
USERS = [rng.normal(size=8).astype(np.float32) for _ in range(12)]


async def test_requests_of_one_turn_are_scored_together():
    sizes: list[int] = []
    batcher = ScoringBatcher(max_batch=8, observe=sizes.append)
    rows = await asyncio.gather(*(batcher.scores(VERSION_A, u) for u in USERS))
    assert sizes == [8, 4]  # full batches close; the rest forms the next one
    for row, user in zip(rows, USERS, strict=True):
        np.testing.assert_allclose(row, VERSION_A @ user, rtol=1e-5, atol=1e-5)
    alone = await batcher.scores(VERSION_A, USERS[0])
    assert sizes[-1] == 1
    np.testing.assert_allclose(alone, VERSION_A @ USERS[0], rtol=1e-5, atol=1e-5)


async def test_versions_are_never_mixed_in_a_batch():
    sizes: list[int] = []
    batcher = ScoringBatcher(observe=sizes.append)
    factors = [VERSION_A, VERSION_B] * 3
    rows = await asyncio.gather(*(batcher.scores(f, u) for f, u in zip(factors, USERS,
                                                                        strict=False)))
    assert sorted(sizes) == [3, 3]
    for row, f, user in zip(rows, factors, USERS, strict=False):
        np.testing.assert_allclose(row, f @ user, rtol=1e-5, atol=1e-5)


async def test_a_cancelled_request_does_not_disturb_its_batch():
    batcher = ScoringBatcher()
    tasks = [asyncio.ensure_future(batcher.scores(VERSION_A, u)) for u in USERS[:3]]
    await asyncio.sleep(0)  # all three are waiting on the batch
    tasks[1].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[1], asyncio.CancelledError)
    np.testing.assert_allclose(done[2], VERSION_A @ USERS[2], rtol=1e-5, atol=1e-5)
