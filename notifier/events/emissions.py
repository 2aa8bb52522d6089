"""What the detection rules emit: typed, with plain values, rendered to JSON by ``envelope``.

The rules know nothing of JSON keys, time formats or ids: an emission says what changed in
terms of the poll (ids, records as the API sent them, milliseconds, scores), and
``envelope.render_data`` turns it into the event's ``data`` as ``docs/events.md`` documents.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

__all__ = ["Connected", "Disconnected", "Emission", "HealthChange", "HealthChanged"]

HealthChange = Literal["viewer.health_dropped", "viewer.health_recovered"]


@dataclass(frozen=True, slots=True)
class Connected:
    """``viewer.connected``: a viewer id appeared in a complete poll."""

    type: ClassVar[Literal["viewer.connected"]] = "viewer.connected"
    viewer_id: str
    record: bytes  # the viewer record exactly as the API returned it


@dataclass(frozen=True, slots=True)
class Disconnected:
    """``viewer.disconnected``: a tracked viewer missed enough consecutive complete polls."""

    type: ClassVar[Literal["viewer.disconnected"]] = "viewer.disconnected"
    viewer_id: str
    record: bytes  # the last record seen
    last_seen_at: int  # ms: start of the last complete poll that saw the viewer


@dataclass(frozen=True, slots=True)
class HealthChanged:
    """``viewer.health_dropped`` or ``viewer.health_recovered``, with the score before it."""

    type: HealthChange
    viewer_id: str
    record: bytes
    previous_score: float | None  # the last measurement before the streak began
    previous_grade: str | None
    threshold: float


Emission = Connected | Disconnected | HealthChanged
"""One event the rules decided on, before it has a sequence number, an id or a time."""
