"""Small asyncio helpers shared by the long-running loops."""

from __future__ import annotations

import asyncio

__all__ = ["wait_event"]


async def wait_event(event: asyncio.Event, seconds: float | None) -> bool:
    """Wait for ``event`` at most ``seconds``; True if it is set.

    Unlike ``asyncio.wait_for`` on Python 3.11, a cancellation that arrives as the event is
    set is never swallowed, so loops built on this stop when they are told to.
    """
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        pass
    return event.is_set()
