"""The micro-batcher: full batches at once, partial ones after the wait, backpressure."""

import asyncio
import time

import pytest

from stream.microbatch import MicroBatcher


def test_batches_fill_up_to_max_and_partial_ones_leave_after_the_wait():
    async def scenario():
        seen: list[tuple[list[int], float]] = []
        started = time.monotonic()

        async def process(batch):
            seen.append((batch, time.monotonic() - started))

        batcher = MicroBatcher(process, max_items=3, max_wait_s=0.2)
        runner = asyncio.ensure_future(batcher.run())
        for n in range(7):
            await batcher.add(n)
        await asyncio.sleep(0.4)
        runner.cancel()
        return seen

    seen = asyncio.run(scenario())
    assert [b for b, _ in seen] == [[0, 1, 2], [3, 4, 5], [6]]
    assert seen[0][1] < 0.1  # full: no waiting
    assert 0.15 < seen[2][1] < 0.35  # the lone event waited for company, then went


def test_a_backlog_builds_bigger_batches_while_one_is_processed():
    async def scenario():
        sizes = []

        async def slow(batch):
            sizes.append(len(batch))
            await asyncio.sleep(0.05)

        batcher = MicroBatcher(slow, max_items=100, max_wait_s=0.01)
        runner = asyncio.ensure_future(batcher.run())
        for n in range(300):
            await batcher.add(n)
            if n % 10 == 0:
                await asyncio.sleep(0.005)
        await asyncio.sleep(0.5)
        runner.cancel()
        return sizes

    sizes = asyncio.run(scenario())
    assert sum(sizes) == 300
    assert max(sizes) >= 3 * sizes[0]  # later batches grew while the first was busy


def test_add_blocks_when_too_much_is_pending():
    async def scenario():
        release = asyncio.Event()

        async def stuck(batch):
            await release.wait()

        batcher = MicroBatcher(stuck, max_items=2, max_wait_s=0.0, max_pending=4)
        runner = asyncio.ensure_future(batcher.run())
        for n in range(6):  # 2 taken by the stuck batch, 4 pending
            await batcher.add(n)
        blocked = asyncio.ensure_future(batcher.add(99))
        await asyncio.sleep(0.05)
        assert not blocked.done() and batcher.pending == 4
        release.set()
        await asyncio.wait_for(blocked, 1)
        runner.cancel()

    asyncio.run(scenario())


def test_rejects_nonsense_limits():
    async def noop(batch):
        pass

    with pytest.raises(ValueError):
        MicroBatcher(noop, max_items=0, max_wait_s=0.1)
