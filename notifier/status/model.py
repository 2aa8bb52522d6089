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
    "PartitionLane",
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


class PartitionLane(msgspec.Struct, frozen=True, kw_only=True):
    """One partition of a lane: the worker delivering its share of the cluster's events
    (``notifier.sinks.partition``), under its own lease, consumer group and report."""

    index: int
    """0 .. K-1 (K: the sink's ``partitions``); 0 for the one partition of K = 1."""
    lag: int | None
    """Entries its group has not read yet (``None``: no group yet, or Redis cannot say)."""
    pending: int
    """Read by its group, not yet acknowledged."""
    leader: str | None
    """The replica (owner id) holding its lease; ``None`` when nobody leads it."""
    last_delivered_at: str | None
    last_error: str | None
    """Its newest delivery failure, one line with secrets masked; ``None`` if none."""
    paused: str | None = None
    """Why its worker is paused; ``None``: delivering (or nobody leads it)."""

    @property
    def leader_short(self) -> str | None:
        """The leader as a person scans it in a row: ``host-pid`` of ``host-pid-random``."""
        if self.leader is None:
            return None
        head, _, tail = self.leader.rpartition("-")
        pid = head.rpartition("-")[2]
        random = len(tail) == 8 and all(c in "0123456789abcdef" for c in tail)
        return head if random and pid.isdigit() else self.leader


class SinkLane(msgspec.Struct, frozen=True, kw_only=True):
    """One sink's delivery of one cluster's stream: the aggregate of its partitions."""

    cluster: str
    lag: int | None
    """The largest lag of its partitions' groups (each reads the whole stream, so the one
    furthest behind is how far behind the lane is); ``None`` when any cannot say."""
    pending: int
    """Read, not yet acknowledged: summed over the partitions (in hand or retrying)."""
    retrying: int
    """Events waiting for a retry."""
    in_hand: int = 0
    """Read and not failed yet (queued, in flight, held by a pause): ``pending`` less
    ``retrying``, never below 0 (``notifier.status.waiting``)."""
    dead_letters: int
    last_error: str | None
    """The newest delivery failure of any partition, one line with secrets masked; ``None``
    if none."""
    last_error_at: str | None
    last_delivered_at: str | None
    """The newest delivery of any partition."""
    paused: str | None = None
    """Why this lane is paused (the first paused partition's reason); ``None``: delivering
    (or nobody leads it)."""
    partitions: list[PartitionLane] = []
    """One per partition, by index: one (index 0) for a sink of ``partitions: 1``."""


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
