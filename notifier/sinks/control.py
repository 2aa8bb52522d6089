"""What one sink's workers share in a process: paused or not, and the counters."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["SinkControl"]


class SinkControl:
    """Shared by every worker of one sink: pause and resume, and what they have done."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.paused: str | None = None
        self.resumed = asyncio.Event()
        self.delivered = 0
        self.retried = 0
        self.dead_lettered = 0
        self.filtered = 0
        self._changed = asyncio.Condition()
        self._watchers: list[Callable[[], None]] = []

    def watch(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` whenever the sink pauses or resumes; returns what stops it."""
        self._watchers.append(callback)
        return lambda: self._watchers.remove(callback)

    async def changed(self) -> None:
        """Tell whoever waits in ``wait_until`` that a counter moved."""
        async with self._changed:
            self._changed.notify_all()

    async def wait_until(self, predicate: Callable[[SinkControl], bool]) -> None:
        """Until ``predicate(self)`` holds (re-checked whenever a counter moves)."""
        async with self._changed:
            await self._changed.wait_for(lambda: predicate(self))

    def pause(self, reason: str) -> bool:
        """Pause (once); True if this call paused it."""
        if self.paused is not None:
            return False
        self.paused = reason
        self.resumed.clear()
        self._tell()
        return True

    def resume(self) -> None:
        """An operator says the endpoint is fixed."""
        self.paused = None
        self.resumed.set()
        self._tell()

    def _tell(self) -> None:
        for callback in list(self._watchers):
            callback()
