"""The consumer loop's fast path (stream.transport): a delivery that suspends is continued
exactly where it stopped, results, exceptions and cancellation included."""

from __future__ import annotations

import asyncio

import pytest

from stream.transport import _resume


async def _delivery(gate: asyncio.Event, log: list[str]) -> str:
    log.append("before")
    await gate.wait()  # a full stream buffer, say
    log.append("after")
    return "done"


def _start(coro):
    try:
        return False, coro.send(None)
    except StopIteration as stop:
        return True, stop.value


def test_a_delivery_that_does_not_suspend_finishes_in_one_step():
    async def quick() -> str:
        return "delivered"

    assert _start(quick()) == (True, "delivered")


def test_a_suspended_delivery_resumes_in_a_task_with_its_result():
    async def main():
        gate, log = asyncio.Event(), []
        coro = _delivery(gate, log)
        finished, yielded = _start(coro)
        assert not finished and log == ["before"]
        task = asyncio.ensure_future(_resume(coro, yielded))
        await asyncio.sleep(0)
        assert not task.done()
        gate.set()
        assert await task == "done"
        assert log == ["before", "after"]

    asyncio.run(main())


def test_cancelling_the_task_cancels_the_delivery_and_errors_propagate():
    async def failing(gate: asyncio.Event) -> None:
        await gate.wait()
        raise ValueError("bad record")

    async def main():
        gate, log = asyncio.Event(), []
        coro = _delivery(gate, log)
        _, yielded = _start(coro)
        task = asyncio.ensure_future(_resume(coro, yielded))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert log == ["before"]

        gate2 = asyncio.Event()
        coro2 = failing(gate2)
        _, yielded2 = _start(coro2)
        task2 = asyncio.ensure_future(_resume(coro2, yielded2))
        gate2.set()
        with pytest.raises(ValueError, match="bad record"):
            await task2

    asyncio.run(main())
