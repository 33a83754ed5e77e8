"""Small asyncio helpers shared by the controller and the agent."""

from __future__ import annotations

import asyncio


async def wait_set(event: asyncio.Event, within: float) -> bool:
    """Wait until ``event`` is set or ``within`` seconds pass; True if it is set.

    Loops that tick on an event use this rather than ``asyncio.wait_for``: on
    Python 3.11, ``wait_for`` returns normally when the task is cancelled just as
    the event is set, so the cancellation is lost and the loop never ends (a
    controller that did not stop on SIGTERM). ``asyncio.wait`` never swallows it."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait([waiter], timeout=within)
    finally:
        waiter.cancel()
    return event.is_set()
