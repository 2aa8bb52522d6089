"""The status model: what ``GET /api/status``, the console at ``/`` and ``notifier status`` show.

Read from Redis only (``notifier.status.reader``), so every replica answers the same. Every
value is plain JSON (``msgspec.json.encode(status)``); field names are the JSON keys. Times are
RFC 3339 strings in UTC, durations seconds. Nothing here holds an IP address or a secret:
viewers appear by id and country only, sinks by name and type.

``healthy`` is what ``notifier status`` exits with (0 healthy, 1 not): every cluster polled
recently (by whichever replica leads it) and no sink paused. ``problems`` says why not, one
line each, in the words of ``/readyz``.
"""

from __future__ import annotations

import msgspec

__all__ = [
    "AudiencePoint",
    "ClusterStatus",
    "EventLine",
    "Incident",
    "LastPoll",
    "SinkLane",
    "SinkStatus",
    "Status",
    "StreamStatus",
]


class LastPoll(msgspec.Struct, frozen=True, kw_only=True):
    """The newest poll cycle of a cluster, complete or not."""

    at: str
    """When the cycle ended."""
    duration: float
    """Seconds, the whole cycle (fetch, decode, detect, commit)."""
    complete: bool
    """Every page fetched and parsed, and the commit written."""
    reason: str | None = None
    """Why not complete, one line, as the poller put it (``"storm: connection refused"``)."""
    events: int = 0
    """Events the cycle emitted."""


class ClusterStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One Storm cluster."""

    name: str
    leader: str | None
    """The replica (owner id) holding the poller lease; ``None`` when nobody leads."""
    last_poll: LastPoll | None
    """``None`` before any replica polled it."""
    last_complete_at: str | None
    """When the newest complete, committed poll started."""
    tracked_viewers: int
    """Viewers tracked after the newest committed poll."""
    events_per_minute: float
    """Events written to the cluster stream over about the last minute (``docs/status.md``)."""
    streams: int
    """Live audiences (streams with at least one viewer)."""
    healthy: bool
    problem: str | None = None
    """Why not healthy, one line; ``None`` when healthy."""


class AudiencePoint(msgspec.Struct, frozen=True, array_like=True):
    """One sample of a stream's audience: ``[unix_ms, viewers]`` in JSON."""

    at_ms: int
    viewers: int


class Incident(msgspec.Struct, frozen=True, kw_only=True):
    """An open health incident of a stream (``stream.health_degraded`` not yet recovered)."""

    since: str
    peak_dropped: int
    peak_share: float


class StreamStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One live audience, of the top streams by viewers."""

    cluster: str
    application_id: str | None
    stream_key: str
    viewers: int
    peak_viewers: int
    dropped: int
    measured: int
    dropped_share: float
    """dropped / measured (0 when measured is 0)."""
    incident: Incident | None
    history: list[AudiencePoint]
    """The audience over the last hour, oldest first: one point per audience sample the
    poller kept (every ``keys.HISTORY_EVERY`` seconds, while the stream was among the largest
    ``keys.HISTORY_STREAMS``), then the current count at ``generated_at``."""


class SinkLane(msgspec.Struct, frozen=True, kw_only=True):
    """One sink's delivery of one cluster's stream."""

    cluster: str
    lag: int | None
    """Entries not yet read by the sink's group (``None``: Redis cannot say, or no group)."""
    pending: int
    """Read, not yet acknowledged."""
    retrying: int
    """Events waiting for a retry."""
    dead_letters: int
    last_error: str | None
    """The newest delivery failure, one line with secrets masked; ``None`` if none."""
    last_error_at: str | None
    last_delivered_at: str | None
    paused: str | None = None
    """Why this lane's worker is paused; ``None``: delivering (or nobody leads it)."""


class SinkStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One sink."""

    name: str
    type: str
    paused: str | None
    """Why the sink is paused (the first paused lane's reason); ``None``: running."""
    lanes: list[SinkLane]


class EventLine(msgspec.Struct, frozen=True, kw_only=True):
    """One of the newest events, as a person reads it (no IP address)."""

    cluster: str
    id: str
    type: str
    time: str
    stream_key: str | None
    viewer: str | None
    """The viewer id for viewer events; ``None`` for stream events."""
    country: str | None
    health: int | None
    """The viewer's ``healthScore`` in the event's record (rounded); ``None`` if none."""
    initial: bool


class Status(msgspec.Struct, frozen=True, kw_only=True):
    """The whole picture."""

    generated_at: str
    version: str
    healthy: bool
    problems: list[str]
    clusters: list[ClusterStatus]
    streams: list[StreamStatus]
    """The top streams by viewers, across clusters (at most 10)."""
    sinks: list[SinkStatus]
    events: list[EventLine]
    """The newest 50 events across clusters, newest first."""
