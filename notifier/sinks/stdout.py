"""The ``stdout`` sink: one JSON event per line on standard output."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, BinaryIO, Literal

from notifier.sinks.base import Batching, Delivered, Failed, Outcome, SinkType
from notifier.sinks.settings import DeliveryNeeds, SinkBaseSettings

if TYPE_CHECKING:
    from collections.abc import Sequence

    from notifier.sinks.base import Event

__all__ = ["SINK_TYPE", "StdoutSink", "StdoutSinkSettings"]


class StdoutSinkSettings(SinkBaseSettings):
    """Writes each event as one JSON line to standard output."""

    type: Literal["stdout"] = "stdout"

    def delivery_needs(self) -> DeliveryNeeds:
        """One write at a time."""
        return DeliveryNeeds(1, 15.0)


class StdoutSink:
    """Writes events, one per line, to a binary stream (standard output by default)."""

    def __init__(self, settings: StdoutSinkSettings, out: BinaryIO | None = None) -> None:
        self.settings = settings
        self._out = out if out is not None else sys.stdout.buffer

    @property
    def batching(self) -> Batching:
        """Everything ready goes out in one write."""
        return Batching(size=500, wait=0.0)

    async def deliver(self, events: Sequence[Event]) -> Outcome:
        """Write and flush; a closed pipe pauses the sink."""
        try:
            self._out.writelines(event.body + b"\n" for event in events)
            self._out.flush()
        except (BrokenPipeError, ValueError) as exc:
            return Failed(f"standard output is closed ({type(exc).__name__})", pause=True)
        return Delivered()

    async def aclose(self) -> None:
        """Nothing to release."""


SINK_TYPE = SinkType(StdoutSinkSettings, StdoutSink)
