"""A third-party sink, as a package outside storm-notifier would write one."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from notifier.sinks.base import Batching, Delivered, Event, Outcome
from notifier.sinks.settings import SinkBaseSettings

if TYPE_CHECKING:
    from collections.abc import Sequence


class FileSinkSettings(SinkBaseSettings):
    """Appends each event as a JSON line to ``path``."""

    type: Literal["file"] = "file"
    path: str


class FileSink:
    """The sink itself: one line an event."""

    def __init__(self, settings: FileSinkSettings) -> None:
        self._path = Path(settings.path)

    @property
    def batching(self) -> Batching:
        """No grouping."""
        return Batching()

    async def deliver(self, events: Sequence[Event]) -> Outcome:
        """Append and report success."""
        with self._path.open("ab") as out:
            out.writelines(event.body + b"\n" for event in events)
        return Delivered()

    async def aclose(self) -> None:
        """Nothing to close."""


class _Factory:
    settings_model = FileSinkSettings

    def create(self, settings: FileSinkSettings) -> FileSink:
        return FileSink(settings)


factory = _Factory()
