"""Small asyncio helpers shared by the long-running loops."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["CANCEL_AGAIN", "cancel_firmly", "wait_event"]

CANCEL_AGAIN = 0.5  # seconds before a stopping worker cancels a task that ignored it again


async def cancel_firmly(tasks: Sequence[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait for them, cancelling again any that is still running after a
    moment: a cancellation that lands inside a Redis call can be swallowed by the client's
    timeout and retry handling (Python 3.11's ``asyncio.timeout``), which would otherwise leave
    a stopping loop waiting forever. Every task that may be in a Redis call is stopped so."""
    pending = set(tasks)
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=CANCEL_AGAIN)
    await asyncio.gather(*tasks, return_exceptions=True)


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
