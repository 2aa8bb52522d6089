"""The ``stdout`` sink: one event per line on standard output, as JSON or as text for people."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, BinaryIO, Literal

import msgspec
from pydantic import Field

from notifier.events.text import TextFormat, wants_color
from notifier.sinks.base import Batching, Delivered, Failed, Outcome, SinkType
from notifier.sinks.settings import DeliveryNeeds, SinkBaseSettings

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from notifier.sinks.base import Event

__all__ = ["SINK_TYPE", "StdoutSink", "StdoutSinkSettings"]


class StdoutSinkSettings(SinkBaseSettings):
    """Writes each event as one line to standard output: its JSON, or a line for people."""

    type: Literal["stdout"] = "stdout"
    format: Literal["json", "text"] = Field(
        default="json",
        description="json: the event as in the stream; text: one aligned line for people"
        " (time, type, stream, viewer, country, health; coloured on a terminal unless NO_COLOR)",
    )

    def delivery_needs(self) -> DeliveryNeeds:
        """One write at a time."""
        return DeliveryNeeds(1, 15.0)


class StdoutSink:
    """Writes events, one per line, to a binary stream (standard output by default).

    ``environ`` decides colour for ``format: text`` (``NO_COLOR``); the process's by default.
    """

    def __init__(
        self,
        settings: StdoutSinkSettings,
        out: BinaryIO | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self._out = out if out is not None else sys.stdout.buffer
        color = wants_color(self._out, os.environ if environ is None else environ)
        self._text = TextFormat(color=color) if settings.format == "text" else None

    @property
    def batching(self) -> Batching:
        """Everything ready goes out in one write."""
        return Batching(size=500, wait=0.0)

    async def deliver(self, events: Sequence[Event]) -> Outcome:
        """Write and flush; a closed pipe pauses the sink."""
        try:
            self._out.writelines(self._line(event) for event in events)
            self._out.flush()
        except (BrokenPipeError, ValueError) as exc:
            return Failed(f"standard output is closed ({type(exc).__name__})", pause=True)
        return Delivered()

    def _line(self, event: Event) -> bytes:
        if self._text is None:
            return event.body + b"\n"
        try:
            payload = event.payload()
        except msgspec.DecodeError:  # not JSON: printed as it is rather than lost
            return event.body + b"\n"
        return self._text.line(payload).encode() + b"\n"

    async def aclose(self) -> None:
        """Nothing to release."""


SINK_TYPE = SinkType(StdoutSinkSettings, StdoutSink)
