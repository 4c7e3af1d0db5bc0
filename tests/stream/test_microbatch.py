"""The micro-batcher: full batches at once, partial ones after the wait, backpressure."""

import asyncio
import time

import pytest

from stream.microbatch import MicroBatcher


def _collect(batcher_kwargs, feed):
    async def scenario():
        seen: list[tuple[list[int], float]] = []
        started = time.monotonic()

        async def process(batch):
            seen.append((batch, time.monotonic() - started))

        batcher = MicroBatcher(process, **batcher_kwargs)
        runner = asyncio.ensure_future(batcher.run())
        await feed(batcher)
        await asyncio.sleep(0.3)
        runner.cancel()
        return seen

    return asyncio.run(scenario())


def test_full_batches_go_at_once_and_a_lone_item_after_a_quiet_gap():
    async def feed(batcher):
        for n in range(7):
            await batcher.add(n)

    seen = _collect(dict(max_items=3, max_wait_s=0.2, quiet_s=0.01), feed)
    assert [b for b, _ in seen] == [[0, 1, 2], [3, 4, 5], [6]]
    assert seen[0][1] < 0.05  # full: no waiting
    assert seen[2][1] < 0.1  # nothing followed it: gone after the quiet gap, not max_wait


def test_a_steady_trickle_is_cut_at_max_wait():
    async def feed(batcher):
        for n in range(40):
            await batcher.add(n)
            await asyncio.sleep(0.005)  # faster than the quiet gap: never quiet

    seen = _collect(dict(max_items=1000, max_wait_s=0.05, quiet_s=0.02), feed)
    sizes = [len(b) for b, _ in seen]
    assert sum(sizes) == 40 and len(sizes) >= 3, sizes  # ~0.2 s of trickle in 50 ms cuts
    assert max(sizes) <= 15, sizes


def test_a_backlog_builds_bigger_batches_while_one_is_processed():
    async def scenario():
        sizes = []

        async def slow(batch):
            sizes.append(len(batch))
            await asyncio.sleep(0.05)

        batcher = MicroBatcher(slow, max_items=100, max_wait_s=0.01, quiet_s=0.002)
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
