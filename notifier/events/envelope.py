"""The event envelope: CloudEvents 1.0, JSON, structured mode (``docs/events.md``).

An event id is a name-based UUID (version 5) in the namespace of the cluster's epoch (a UUID
made once, when its state is first created in Redis) over the event's sequence number, type
and subject (the viewer id; a stream event's streamKey): the same change always has the same
id, and ids never repeat, even if a cluster's state is wiped and started again.

A viewer event's ``data`` is ``{"viewer": <the record as the API sent it>, ...}``; a stream
event's is ``{"stream": {"applicationId", "streamKey"}, ...its figures}`` (SPEC 4.1). Both are
rendered by ``render_data``, the only place that names the keys of ``data``.
"""

from __future__ import annotations

import functools
import hashlib
import time
import uuid
from typing import TYPE_CHECKING, Any, Final, Literal, get_args

import msgspec

from notifier.events.emissions import (
    AudienceCrossed,
    AudienceEnded,
    AudienceStarted,
    Connected,
    Disconnected,
    HealthChanged,
    StreamDegraded,
    StreamRecovered,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from notifier.events.emissions import (
        Breakdown,
        BreakdownRow,
        Emission,
        Incident,
        Session,
        StreamEmission,
    )

__all__ = [
    "CONTENT_TYPE",
    "EVENT_TYPES",
    "STREAM_EVENT_TYPES",
    "VIEWER_EVENT_TYPES",
    "Envelope",
    "EventType",
    "StreamEventType",
    "ViewerEventType",
    "encode_emission",
    "encode_event",
    "event_id",
    "iso_time",
    "render_data",
]

ViewerEventType = Literal[
    "viewer.connected",
    "viewer.disconnected",
    "viewer.health_dropped",
    "viewer.health_recovered",
]
StreamEventType = Literal[
    "stream.audience_started",
    "stream.audience_crossed",
    "stream.health_degraded",
    "stream.health_recovered",
    "stream.audience_ended",
]
EventType = Literal[ViewerEventType, StreamEventType]
VIEWER_EVENT_TYPES: Final[tuple[ViewerEventType, ...]] = get_args(ViewerEventType)
STREAM_EVENT_TYPES: Final[tuple[StreamEventType, ...]] = get_args(StreamEventType)
EVENT_TYPES: Final[tuple[EventType, ...]] = (*VIEWER_EVENT_TYPES, *STREAM_EVENT_TYPES)

CONTENT_TYPE: Final = "application/cloudevents+json"

_encoder = msgspec.json.Encoder()
_INITIAL: Final = b',"initial":true'  # what data.initial adds after the viewer record


@functools.lru_cache(maxsize=64)
def iso_time(ms: int) -> str:
    """Unix milliseconds as RFC 3339 UTC with milliseconds: ``2026-02-05T08:22:40.071Z``."""
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


@functools.lru_cache(maxsize=64)
def _namespace(epoch: str) -> bytes:
    return uuid.UUID(epoch).bytes


_VARIANT: Final = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def _uuid5(namespace: bytes, name: str) -> str:
    # RFC 4122 name-based UUIDs are defined with SHA-1; version 5, variant 10xx.
    h = hashlib.sha1(namespace + name.encode()).hexdigest()  # noqa: S324
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


def event_id(epoch: str, sequence: int, event_type: str = "", subject: str = "") -> str:
    """``uuid5(epoch, "sequence:type:subject")``, computed without the uuid module's overhead."""
    return _uuid5(_namespace(epoch), f"{sequence}:{event_type}:{subject}")


class Envelope:
    """Encodes the events of one poll of one cluster: what they share is done once.

    The cluster, the epoch's namespace and the poll's time are the same for every event of a
    poll, so the JSON around each viewer record is assembled from ready-made pieces; only the
    id, the subject, the sequence and the data are per event. The bytes are those of
    ``encode_event``: same keys, same order, same escaping (``tests/test_envelope.py``).
    ``viewer.connected``, all of a first poll's events, skips ``render_data`` altogether.
    """

    __slots__ = ("_namespace", "_pieces", "_tail")

    def __init__(self, *, cluster: str, epoch: str, time_ms: int) -> None:
        self._namespace = _namespace(epoch)
        source = _encoder.encode(f"/clusters/{cluster}")
        self._pieces = {
            kind: b'","source":' + source + b',"type":"' + kind.encode() + b'","subject":'
            for kind in EVENT_TYPES
        }
        self._tail = (
            b',"time":' + _encoder.encode(iso_time(time_ms)) + b',"datacontenttype":'
            b'"application/json","cluster":' + _encoder.encode(cluster) + b',"sequence":'
        )

    def encode(
        self,
        event_type: EventType,
        subject: str,
        record: bytes,
        data: Mapping[str, Any],
        sequence: int,
    ) -> tuple[str, bytes]:
        """A viewer event's id and JSON: ``data`` after ``viewer``, the record byte for byte."""
        rest = b"," + _encoder.encode(data)[1:-1] if data else b""
        return self._viewer_event(event_type, subject, record, rest, sequence)

    def encode_stream(
        self, event_type: EventType, subject: str, data: Mapping[str, Any], sequence: int
    ) -> tuple[str, bytes]:
        """A stream event's id and JSON: ``data`` is the whole of it."""
        identifier = _uuid5(self._namespace, f"{sequence}:{event_type}:{subject}")
        body = b"".join(
            (
                b'{"specversion":"1.0","id":"',
                identifier.encode(),
                self._pieces[event_type],
                _encoder.encode(subject),
                self._tail,
                str(sequence).encode(),
                b',"data":',
                _encoder.encode(data),
                b"}",
            )
        )
        return identifier, body

    def encode_emission(
        self, emission: Emission | StreamEmission, sequence: int
    ) -> tuple[str, bytes]:
        """The id and JSON of the event an emission becomes at ``sequence``."""
        if isinstance(emission, Connected):  # the hot path: a first poll is nothing else
            rest = _INITIAL if emission.initial else b""
            return self._viewer_event(
                emission.type, emission.viewer_id, emission.record, rest, sequence
            )
        if isinstance(emission, Disconnected | HealthChanged):
            return self.encode(
                emission.type, emission.viewer_id, emission.record, render_data(emission), sequence
            )
        return self.encode_stream(
            emission.type, emission.stream_key, render_data(emission), sequence
        )

    def _viewer_event(
        self, event_type: EventType, subject: str, record: bytes, rest: bytes, sequence: int
    ) -> tuple[str, bytes]:
        """``rest``: the encoded fields after ``viewer``, with their leading comma (or b"")."""
        identifier = _uuid5(self._namespace, f"{sequence}:{event_type}:{subject}")
        body = b"".join(
            (
                b'{"specversion":"1.0","id":"',
                identifier.encode(),
                self._pieces[event_type],
                _encoder.encode(subject),
                self._tail,
                str(sequence).encode(),
                b',"data":{"viewer":',
                record,
                rest,
                b"}}",
            )
        )
        return identifier, body


def render_data(emission: Emission | StreamEmission) -> dict[str, Any]:
    """The event's ``data`` as ``docs/events.md`` documents it: for a viewer event the fields
    besides ``viewer`` (the record is embedded as it came), for a stream event all of it."""
    if isinstance(emission, Connected):
        return {"initial": True} if emission.initial else {}
    if isinstance(emission, Disconnected):
        if emission.session is None:
            return {"lastSeenAt": iso_time(emission.last_seen_at)}
        return {
            "lastSeenAt": iso_time(emission.last_seen_at),
            "session": _session(emission.session),
        }
    if isinstance(emission, HealthChanged):
        return {
            "previous": {
                "healthScore": _number(emission.previous_score),
                "healthGrade": emission.previous_grade,
            },
            "threshold": _number(emission.threshold),
        }
    return _stream_data(emission)


def _stream_data(emission: StreamEmission) -> dict[str, Any]:
    """``stream``, then the figures of SPEC 4.1 in its order, then ``initial`` when true."""
    data: dict[str, Any] = {
        "stream": {"applicationId": emission.application_id, "streamKey": emission.stream_key}
    }
    if isinstance(emission, AudienceStarted):
        data["viewers"] = emission.viewers
    elif isinstance(emission, AudienceCrossed):
        data["threshold"] = emission.threshold
        data["direction"] = emission.direction
        data["viewers"] = emission.viewers
        data["peakViewers"] = emission.peak_viewers
    elif isinstance(emission, StreamDegraded | StreamRecovered):
        data["viewers"] = emission.viewers
        data["measured"] = emission.measured
        data["dropped"] = emission.dropped
        data["share"] = _number(emission.share)
        data["breakdown"] = _breakdown(emission.breakdown)
        if isinstance(emission, StreamRecovered):
            data["incident"] = _incident(emission.incident)
    elif isinstance(emission, AudienceEnded):
        summary = emission.summary
        data["summary"] = {
            "startedAt": iso_time(summary.started_at),
            "durationMs": summary.duration_ms,
            "peakViewers": summary.peak_viewers,
            "peakAt": iso_time(summary.peak_at),
            "sessions": summary.sessions,
            "degradedMs": summary.degraded_ms,
            "endedDegraded": summary.ended_degraded,
        }
    else:
        raise TypeError(f"not an emission: {type(emission).__name__}")
    if isinstance(emission, AudienceStarted | AudienceCrossed) and emission.initial:
        data["initial"] = True
    return data


def _session(session: Session) -> dict[str, Any]:
    """``data.session`` of ``viewer.disconnected`` (SPEC 4.2)."""
    health = None
    if session.measured_polls and session.health_avg is not None:
        health = {
            "min": _number(session.health_min),
            "max": _number(session.health_max),
            "avg": _number(round(session.health_avg, 2)),
            "measuredPolls": session.measured_polls,
        }
    return {
        "connectedAt": iso_time(session.connected_at),
        "durationMs": session.duration_ms,
        "polls": session.polls,
        "health": health,
        "drops": session.drops,
        "degradedMs": session.degraded_ms,
        "complete": session.complete,
    }


def _breakdown(breakdown: Breakdown) -> dict[str, list[dict[str, Any]]]:
    return {
        "countryCode": _rows(breakdown.country_code),
        "harnessType": _rows(breakdown.harness_type),
        "deviceType": _rows(breakdown.device_type),
    }


def _rows(rows: tuple[BreakdownRow, ...]) -> list[dict[str, Any]]:
    return [{"value": row.value, "viewers": row.viewers, "dropped": row.dropped} for row in rows]


def _incident(incident: Incident) -> dict[str, Any]:
    return {
        "since": iso_time(incident.since),
        "durationMs": incident.duration_ms,
        "peakDropped": incident.peak_dropped,
        "peakShare": _number(incident.peak_share),
    }


def encode_emission(
    emission: Emission | StreamEmission, *, cluster: str, sequence: int, epoch: str, time_ms: int
) -> tuple[str, bytes]:
    """The id and JSON of the event an emission becomes at ``sequence`` (one event; a poll's
    events share an ``Envelope``)."""
    return Envelope(cluster=cluster, epoch=epoch, time_ms=time_ms).encode_emission(
        emission, sequence
    )


def encode_event(
    *,
    cluster: str,
    event_type: EventType,
    viewer_id: str,
    record: bytes,
    data: Mapping[str, Any],
    sequence: int,
    epoch: str,
    time_ms: int,
) -> tuple[str, bytes]:
    """A viewer event's id and its JSON; the viewer record is embedded byte for byte."""
    envelope = Envelope(cluster=cluster, epoch=epoch, time_ms=time_ms)
    return envelope.encode(event_type, viewer_id, record, data, sequence)


def _number(value: float | None) -> float | int | None:
    """Whole numbers as ints, the way the API writes scores."""
    if value is not None and value == int(value):
        return int(value)
    return value
