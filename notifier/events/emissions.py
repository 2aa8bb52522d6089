"""What the detection rules emit: typed, with plain values, rendered to JSON by ``envelope``.

The rules know nothing of JSON keys, time formats or ids: an emission says what changed in
terms of the poll (ids, records as the API sent them, milliseconds, scores), and
``envelope.render_data`` turns it into the event's ``data`` as ``docs/events.md`` documents.

The viewer emissions are msgspec structs outside the garbage collector's view (they hold only
plain values, so no cycle): a first poll of a big event makes 100,000 of them at once, and
as tracked objects they set off full collections over the whole heap.

Stream emissions (SPEC 4.1, ``detect.streams``) carry the stream's identity
(``application_id``, ``stream_key``) and the figures of the poll after which they were
decided; they form their own union, ``StreamEmission``, beside the viewer ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import msgspec

__all__ = [
    "AudienceCrossed",
    "AudienceEnded",
    "AudienceStarted",
    "AudienceSummary",
    "Breakdown",
    "BreakdownRow",
    "Connected",
    "CrossingDirection",
    "Disconnected",
    "Emission",
    "HealthChange",
    "HealthChanged",
    "Incident",
    "Session",
    "StreamDegraded",
    "StreamEmission",
    "StreamRecovered",
]

HealthChange = Literal["viewer.health_dropped", "viewer.health_recovered"]


class Connected(msgspec.Struct, frozen=True, gc=False):
    """``viewer.connected``: a viewer id appeared in a complete poll."""

    type: ClassVar[Literal["viewer.connected"]] = "viewer.connected"
    viewer_id: str
    record: bytes  # the viewer record exactly as the API returned it
    initial: bool = False  # the poll started from no tracked state: already watching before


class Session(msgspec.Struct, frozen=True, gc=False):
    """What a viewer's session added up to, carried by its ``viewer.disconnected`` (SPEC 4.2).

    The counts cover the complete polls that saw the viewer; with ``complete`` False a restart
    or failover during the session may have lost some of them, and they are a lower bound.
    """

    connected_at: int  # ms: the poll that emitted viewer.connected
    duration_ms: int  # last seen - connected_at
    polls: int
    health_min: float | None  # over the polls with data; None (all four) when there were none
    health_max: float | None
    health_avg: float | None
    measured_polls: int
    drops: int  # the session's viewer.health_dropped events
    degraded_ms: int  # from each drop to its recovery (or to the last poll that saw the viewer)
    complete: bool


class Disconnected(msgspec.Struct, frozen=True, gc=False):
    """``viewer.disconnected``: a tracked viewer missed enough consecutive complete polls."""

    type: ClassVar[Literal["viewer.disconnected"]] = "viewer.disconnected"
    viewer_id: str
    record: bytes  # the last record seen
    last_seen_at: int  # ms: start of the last complete poll that saw the viewer
    session: Session | None = None


class HealthChanged(msgspec.Struct, frozen=True, gc=False):
    """``viewer.health_dropped`` or ``viewer.health_recovered``, with the score before it."""

    type: HealthChange
    viewer_id: str
    record: bytes
    previous_score: float | None  # the last measurement before the streak began
    previous_grade: str | None
    threshold: float


Emission = Connected | Disconnected | HealthChanged
"""One event the rules decided on, before it has a sequence number, an id or a time."""


# --- stream (audience) emissions ---------------------------------------------------------------

CrossingDirection = Literal["up", "down"]


@dataclass(frozen=True, slots=True)
class BreakdownRow:
    """Audience viewers sharing one value of one attribute (``value`` None: the record had none)."""

    value: str | None
    viewers: int
    dropped: int


@dataclass(frozen=True, slots=True)
class Breakdown:
    """Per attribute, up to 5 rows, most dropped first."""

    country_code: tuple[BreakdownRow, ...]
    harness_type: tuple[BreakdownRow, ...]
    device_type: tuple[BreakdownRow, ...]


@dataclass(frozen=True, slots=True)
class Incident:
    """A degradation that ended in a recovery."""

    since: int  # ms: the poll that emitted stream.health_degraded
    duration_ms: int
    peak_dropped: int  # the most dropped viewers in a poll while degraded
    peak_share: float  # the highest dropped / measured in a poll while degraded


@dataclass(frozen=True, slots=True)
class AudienceSummary:
    """An audience from its start to its end."""

    started_at: int  # ms: the poll that started it (or took it over, see detect.streams.adopt)
    duration_ms: int
    peak_viewers: int
    peak_at: int  # ms: the first poll that reached the peak
    sessions: int  # viewers that joined the audience while it lasted
    degraded_ms: int  # time spent degraded, the open incident included
    ended_degraded: bool


@dataclass(frozen=True, slots=True)
class AudienceStarted:
    """``stream.audience_started``: the audience went from none to one or more."""

    type: ClassVar[Literal["stream.audience_started"]] = "stream.audience_started"
    application_id: str
    stream_key: str
    viewers: int
    initial: bool  # the first poll from no state: the audience was there before the notifier


@dataclass(frozen=True, slots=True)
class AudienceCrossed:
    """``stream.audience_crossed``: a threshold reached (up) or fallen below with hysteresis."""

    type: ClassVar[Literal["stream.audience_crossed"]] = "stream.audience_crossed"
    application_id: str
    stream_key: str
    threshold: int
    direction: CrossingDirection
    viewers: int
    peak_viewers: int
    initial: bool  # an up-crossing of the first poll from no state


@dataclass(frozen=True, slots=True)
class StreamDegraded:
    """``stream.health_degraded``: enough of the measured audience is dropped."""

    type: ClassVar[Literal["stream.health_degraded"]] = "stream.health_degraded"
    application_id: str
    stream_key: str
    viewers: int
    measured: int
    dropped: int
    share: float  # dropped / measured, 0 when measured is 0
    breakdown: Breakdown


@dataclass(frozen=True, slots=True)
class StreamRecovered:
    """``stream.health_recovered``: after a degradation, the audience not ended."""

    type: ClassVar[Literal["stream.health_recovered"]] = "stream.health_recovered"
    application_id: str
    stream_key: str
    viewers: int
    measured: int
    dropped: int
    share: float
    breakdown: Breakdown
    incident: Incident


@dataclass(frozen=True, slots=True)
class AudienceEnded:
    """``stream.audience_ended``: the audience went from some to none."""

    type: ClassVar[Literal["stream.audience_ended"]] = "stream.audience_ended"
    application_id: str
    stream_key: str
    summary: AudienceSummary


StreamEmission = (
    AudienceStarted | AudienceCrossed | StreamDegraded | StreamRecovered | AudienceEnded
)
"""One stream event the rules decided on (SPEC 4.1), before its envelope."""
