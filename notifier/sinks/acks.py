"""Acknowledgements of final outcomes, batched: a few round trips for thousands of events.

An entry is acknowledged only once it is delivered or filtered out (dead letters acknowledge
themselves, atomically). Acks are kept in order and flushed every ``interval`` or once
``batch`` are waiting; a flush that fails keeps them for the next one, so none is lost while
the worker holds its lease (and if it loses it, the entries stay pending and are read again).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from notifier._aio import wait_event

if TYPE_CHECKING:
    from notifier.sinks.stream import SinkStream

__all__ = ["AckBuffer"]

ACK_BATCH = 256
ACK_INTERVAL = 0.02


class AckBuffer:
    """Collects entry ids to acknowledge and flushes them to one sink's group."""

    def __init__(
        self, stream: SinkStream, *, batch: int = ACK_BATCH, interval: float = ACK_INTERVAL
    ) -> None:
        self._stream = stream
        self._batch = batch
        self._interval = interval
        self._acks: list[str] = []
        self._retried: list[str] = []  # of those, the ones with a saved retry state to drop
        self._wanted = asyncio.Event()
        self._closing = False

    def add(self, entry_id: str, *, retried: bool) -> None:
        """Acknowledge ``entry_id`` soon; ``retried``: it has a retry state to delete too."""
        self._acks.append(entry_id)
        if retried:
            self._retried.append(entry_id)
        if len(self._acks) >= self._batch:
            self._wanted.set()

    async def run(self) -> None:
        """Flush every ``interval`` (sooner when a batch is full) until ``close``."""
        while not self._closing:
            await wait_event(self._wanted, self._interval)
            self._wanted.clear()
            await self.flush()

    def close(self) -> None:
        """Let ``run`` end after its next flush."""
        self._closing = True
        self._wanted.set()

    async def flush(self) -> None:
        """Send what waits in one round trip; on failure it waits for the next flush."""
        if not self._acks:
            return
        acks, retried = self._acks, self._retried
        self._acks, self._retried = [], []
        try:
            await self._stream.ack(acks, retried)
        except BaseException:
            self._acks[:0], self._retried[:0] = acks, retried
            raise
