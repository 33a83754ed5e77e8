"""``wait_set``: a tick on an event that never loses a cancellation."""

from __future__ import annotations

import asyncio

import pytest

from federation.aio import wait_set


def test_returns_whether_the_event_was_set() -> None:
    async def main() -> tuple[bool, bool]:
        event = asyncio.Event()
        quiet = await wait_set(event, 0.01)
        asyncio.get_running_loop().call_soon(event.set)
        return quiet, await wait_set(event, 10)

    assert asyncio.run(main()) == (False, True)


def test_a_cancel_that_arrives_as_the_event_is_set_ends_the_loop() -> None:
    async def main() -> None:
        event = asyncio.Event()
        ticks = 0

        async def loop() -> None:
            nonlocal ticks
            while True:
                await wait_set(event, 10)
                event.clear()
                ticks += 1

        task = asyncio.create_task(loop())
        await asyncio.sleep(0)  # let the loop start waiting
        event.set()
        task.cancel()  # the same step: the wait is done and cancelled at once
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 2)
        assert ticks == 0

    asyncio.run(main())
