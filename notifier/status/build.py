"""The status model from what was read (pure: no Redis, no clock).

``reader`` makes the round trips and decodes what Redis holds into ``ClusterReading``\\ s; this
module decides what they mean: whether a cluster is healthy and why not, the events per minute,
the top streams and their charts, the sinks' lanes, the newest events. ``/readyz`` and
``/api/status`` word their problems with the same two functions, ``cluster_problem`` and
``sink_problem``, so the two always agree.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from notifier.events import iso_time
from notifier.keys import HISTORY_EVERY
from notifier.sinks.lane import one_line_error
from notifier.status.model import (
    AudiencePoint,
    ClusterStatus,
    EventLine,
    Incident,
    LastPoll,
    PartitionLane,
    SinkLane,
    SinkStatus,
    Status,
    StreamStatus,
)
from notifier.status.waiting import Waiting

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from notifier.config import Settings
    from notifier.detect.report import PollRecord, Sample
    from notifier.detect.tally import StreamId, StreamState
    from notifier.events import Event
    from notifier.sinks.lane import LaneReport
    from notifier.storm.settings import ClusterSettings

__all__ = [
    "EVENTS_LAST",
    "HOUR_MS",
    "MINUTE_MS",
    "STREAMS_TOP",
    "ClusterReading",
    "LaneReading",
    "PartitionReading",
    "build_status",
    "cluster_problem",
    "entry_ms",
    "events_per_minute",
    "poll_allowance",
    "problem_lines",
    "sink_problem",
]

STREAMS_TOP = 10
"""Streams in the status: the largest audiences across clusters."""
EVENTS_LAST = 50
"""Events in the status: the newest across clusters."""
MINUTE_MS = 60_000
HOUR_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class PartitionReading:
    """What Redis says of one partition of a lane: its group's lag and pending (XINFO
    GROUPS), its lease holder and its report."""

    index: int
    lag: int | None
    pending: int
    leader: str | None
    report: LaneReport


@dataclass(frozen=True, slots=True)
class LaneReading:
    """What Redis says of one sink's delivery of one cluster: its partitions, by index, and
    the counts kept per sink (retries, dead letters)."""

    sink: str
    retrying: int
    dead_letters: int
    partitions: tuple[PartitionReading, ...]


@dataclass(frozen=True, slots=True)
class ClusterReading:
    """What Redis says of one cluster (``reader``); the lists are empty when not read."""

    name: str
    poll: PollRecord | None
    polled_at_ms: int | None  # meta ``polled_at``: the start of the newest committed poll
    sequence: int  # meta ``sequence``: the newest event's
    leader: str | None
    viewers: int  # HLEN of the viewers hash
    stream_count: int  # HLEN of the streams hash
    samples: tuple[Sample, ...] = ()  # newest first
    events: tuple[Event, ...] = ()  # newest first, at most EVENTS_LAST
    lanes: tuple[LaneReading, ...] = ()
    streams: tuple[tuple[StreamId, StreamState], ...] = ()


def poll_allowance(cluster: ClusterSettings, leader_lease: float) -> float:
    """Seconds a cluster may go without a complete poll before it is a problem: two slots, a
    poll's budget and a lease (a failover) — the rule ``/readyz`` has always used."""
    return 2 * cluster.poll_interval + cluster.poll_budget + leader_lease


def cluster_problem(
    *,
    polled_at_ms: int | None,
    poll: PollRecord | None,
    leader: str | None,
    allowance: float,
    now_ms: int,
) -> str | None:
    """Why a cluster is not healthy, with the cause when one is known; None when it is.

    Not healthy: never polled, or no complete poll within ``allowance`` seconds. The cause is
    the newest poll's reason when that poll was not complete, else "no replica leads it"
    when nobody holds the lease.
    """
    if polled_at_ms is None:
        problem = "not polled yet"
    elif now_ms - polled_at_ms > allowance * 1000:
        problem = f"last complete poll {(now_ms - polled_at_ms) / 1000:.0f}s ago"
    else:
        return None
    if poll is not None and not poll.complete and poll.reason:
        return f"{problem}: {poll.reason}"
    if leader is None:
        return f"{problem}: no replica leads it"
    return problem


def sink_problem(name: str, paused: str) -> str:
    """The problem line of a paused sink (one line, URLs cut to scheme and host)."""
    return f"sink {name}: paused: {one_line_error(paused)}"


def problem_lines(clusters: Iterable[ClusterStatus], sinks: Iterable[SinkStatus]) -> list[str]:
    """One line per problem: the unhealthy clusters, then the paused sinks."""
    lines = [f"cluster {c.name}: {c.problem}" for c in clusters if c.problem is not None]
    return lines + [sink_problem(s.name, s.paused) for s in sinks if s.paused is not None]


def entry_ms(event: Event) -> int:
    """When the event's stream entry was added (Unix ms, from its id)."""
    return int(event.entry_id.partition("-")[0])


def events_per_minute(
    events: Sequence[Event], samples: Sequence[Sample], sequence: int, now_ms: int
) -> float:
    """Events a cluster wrote over about the last minute.

    Counted from the newest events read when they reach back past the minute (or are all the
    stream has); otherwise (more than ``EVENTS_LAST`` in the minute) from the sequence: the
    events since the newest audience sample at least a minute old, per minute, or since the
    oldest sample if it is at least ``HISTORY_EVERY`` old. Without such a sample (the first
    seconds of a cluster), the count read: a lower bound.
    """
    minute_ago = now_ms - MINUTE_MS
    recent = sum(1 for event in events if entry_ms(event) > minute_ago)
    if recent < len(events) or len(events) < EVENTS_LAST:
        return float(recent)
    usable = [s for s in samples if s.seq <= sequence]  # (a sequence that restarted: not)
    base = next((s for s in usable if s.at_ms <= minute_ago), None)
    if base is None and usable and usable[-1].at_ms <= now_ms - HISTORY_EVERY * 1000:
        base = usable[-1]
    if base is None:
        return float(recent)
    return round((sequence - base.seq) * MINUTE_MS / max(now_ms - base.at_ms, 1), 1)


def build_status(
    settings: Settings, readings: Sequence[ClusterReading], *, now_ms: int, version: str
) -> Status:
    """The whole model from one reading per cluster (those of ``settings`` that were read)."""
    by_name = {c.name: c for c in settings.clusters}
    lease = settings.detection.leader_lease
    clusters = [_cluster(r, poll_allowance(by_name[r.name], lease), now_ms) for r in readings]
    sinks = _sinks(settings, readings)
    problems = problem_lines(clusters, sinks)
    return Status(
        generated_at=iso_time(now_ms),
        version=version,
        healthy=not problems,
        problems=problems,
        clusters=clusters,
        streams=_top_streams(readings, now_ms),
        sinks=sinks,
        events=_events(readings),
    )


def _time(ms: int | None) -> str | None:
    return None if ms is None else iso_time(ms)


def _cluster(reading: ClusterReading, allowance: float, now_ms: int) -> ClusterStatus:
    poll = reading.poll
    problem = cluster_problem(
        polled_at_ms=reading.polled_at_ms,
        poll=poll,
        leader=reading.leader,
        allowance=allowance,
        now_ms=now_ms,
    )
    last_poll = None
    if poll is not None:
        last_poll = LastPoll(
            at=iso_time(poll.at_ms),
            duration=round(poll.duration, 3),
            complete=poll.complete,
            reason=None if poll.complete else poll.reason,
            events=poll.events,
        )
    tracked = poll.tracked if poll is not None and poll.tracked is not None else reading.viewers
    streams = poll.streams if poll is not None and poll.streams is not None else None
    return ClusterStatus(
        name=reading.name,
        leader=reading.leader,
        last_poll=last_poll,
        last_complete_at=_time(reading.polled_at_ms),
        tracked_viewers=tracked,
        events_per_minute=events_per_minute(
            reading.events, reading.samples, reading.sequence, now_ms
        ),
        streams=reading.stream_count if streams is None else streams,
        healthy=problem is None,
        problem=problem,
    )


def _histories(
    samples: Iterable[Sample], since_ms: int
) -> dict[tuple[str | None, str], list[AudiencePoint]]:
    """Each stream's points in the samples since ``since_ms``, oldest first."""
    points: dict[tuple[str | None, str], list[AudiencePoint]] = {}
    for sample in sorted(samples, key=lambda s: s.at_ms):
        if sample.at_ms >= since_ms:
            for app, key, viewers in sample.streams:
                points.setdefault((app, key), []).append(AudiencePoint(sample.at_ms, viewers))
    return points


def _top_streams(readings: Sequence[ClusterReading], now_ms: int) -> list[StreamStatus]:
    candidates = [
        (state.viewers, reading.name, stream, state)
        for reading in readings
        for stream, state in reading.streams
        if state.viewers > 0
    ]
    top = heapq.nsmallest(
        STREAMS_TOP, candidates, key=lambda c: (-c[0], c[1], c[2].stream_key, c[2].application_id)
    )
    histories = {
        r.name: _histories(r.samples, now_ms - HOUR_MS)
        for r in readings
        if any(name == r.name for _, name, _, _ in top)
    }
    out = []
    for viewers, cluster, stream, state in top:
        points = histories[cluster].get((stream.application_id, stream.stream_key), [])
        incident = None
        if state.degraded_since is not None:
            incident = Incident(
                since=iso_time(state.degraded_since),
                peak_dropped=state.peak_dropped,
                peak_share=round(state.peak_share, 4),
            )
        out.append(
            StreamStatus(
                cluster=cluster,
                application_id=stream.application_id,
                stream_key=stream.stream_key,
                viewers=viewers,
                peak_viewers=state.peak_viewers,
                dropped=state.dropped,
                measured=state.measured,
                dropped_share=round(state.dropped / state.measured, 4) if state.measured else 0.0,
                incident=incident,
                history=[*points, AudiencePoint(now_ms, viewers)],
            )
        )
    return out


def _sinks(settings: Settings, readings: Sequence[ClusterReading]) -> list[SinkStatus]:
    out = []
    for sink in settings.sinks:
        lanes = [
            _lane(reading.name, lane)
            for reading in readings
            for lane in reading.lanes
            if lane.sink == sink.name
        ]
        paused = next((lane.paused for lane in lanes if lane.paused is not None), None)
        out.append(SinkStatus(name=sink.name, type=sink.type, paused=paused, lanes=lanes))
    return out


def _lane(cluster: str, lane: LaneReading) -> SinkLane:
    """The lane as the aggregate of its partitions: the largest lag (``None`` if any cannot
    say), pending summed and what of it is in hand (``waiting``), the newest error and
    delivery, the first pause."""
    parts = lane.partitions
    waiting = Waiting.of((p.lag for p in parts), (p.pending for p in parts), lane.retrying)
    errored = [part.report for part in parts if part.report.last_error is not None]
    newest_error = max(errored, key=lambda r: r.last_error_at or -1, default=None)
    delivered = [r.last_delivered_at for r in (p.report for p in parts) if r.last_delivered_at]
    return SinkLane(
        cluster=cluster,
        lag=waiting.unread,
        pending=sum(part.pending for part in parts),
        retrying=lane.retrying,
        in_hand=waiting.in_hand,
        dead_letters=lane.dead_letters,
        last_error=None if newest_error is None else newest_error.last_error,
        last_error_at=None if newest_error is None else _time(newest_error.last_error_at),
        last_delivered_at=_time(max(delivered, default=None)),
        paused=next((p.report.paused for p in parts if p.report.paused is not None), None),
        partitions=[_partition(part) for part in parts],
    )


def _partition(part: PartitionReading) -> PartitionLane:
    report = part.report
    return PartitionLane(
        index=part.index,
        lag=part.lag,
        pending=part.pending,
        leader=part.leader,
        last_delivered_at=_time(report.last_delivered_at),
        last_error=report.last_error,
        paused=report.paused,
    )


def _events(readings: Sequence[ClusterReading]) -> list[EventLine]:
    newest = heapq.nlargest(
        EVENTS_LAST,
        (event for reading in readings for event in reading.events),
        key=lambda e: (entry_ms(e), e.sequence),
    )
    return [_event_line(event) for event in newest]


def _event_line(event: Event) -> EventLine:
    """The event as a person reads it: no IP address, no record beyond these fields."""
    payload: dict[str, Any] = event.payload()
    when = payload.get("time")
    data = payload.get("data")
    record = data.get("viewer") if isinstance(data, dict) else None
    score = record.get("healthScore") if isinstance(record, dict) else None
    health = None
    if isinstance(score, int | float) and not isinstance(score, bool):
        health = round(score)
    stream_event = event.is_stream_event
    return EventLine(
        cluster=event.cluster,
        id=event.id,
        type=event.type,
        time=when if isinstance(when, str) else iso_time(entry_ms(event)),
        stream_key=event.stream_key,
        viewer=None if stream_event else event.subject,
        country=None if stream_event else event.country,
        health=None if stream_event else health,
        initial=event.initial,
    )
