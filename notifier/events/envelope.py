"""The event envelope: CloudEvents 1.0, JSON, structured mode (``docs/events.md``).

An event id is a name-based UUID (version 5) in the namespace of the cluster's epoch (a UUID
made once, when its state is first created in Redis) over the event's sequence number, type
and viewer: the same change always has the same id, and ids never repeat, even if a
cluster's state is wiped and started again.
"""

from __future__ import annotations

import functools
import hashlib
import time
import uuid
from typing import TYPE_CHECKING, Any, Final, Literal, get_args

import msgspec

from notifier.events.emissions import Connected, Disconnected, HealthChanged

if TYPE_CHECKING:
    from collections.abc import Mapping

    from notifier.events.emissions import Emission

__all__ = [
    "CONTENT_TYPE",
    "EVENT_TYPES",
    "Envelope",
    "EventType",
    "encode_emission",
    "encode_event",
    "event_id",
    "iso_time",
    "render_data",
]

EventType = Literal[
    "viewer.connected",
    "viewer.disconnected",
    "viewer.health_dropped",
    "viewer.health_recovered",
]
EVENT_TYPES: Final[tuple[EventType, ...]] = get_args(EventType)

CONTENT_TYPE: Final = "application/cloudevents+json"

_encoder = msgspec.json.Encoder()


@functools.lru_cache(maxsize=64)
def iso_time(ms: int) -> str:
    """Unix milliseconds as RFC 3339 UTC with milliseconds: ``2026-02-05T08:22:40.071Z``."""
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


@functools.lru_cache(maxsize=64)
def _namespace(epoch: str) -> bytes:
    return uuid.UUID(epoch).bytes


def _uuid5(namespace: bytes, name: str) -> str:
    # RFC 4122 name-based UUIDs are defined with SHA-1; version 5, variant 10xx.
    h = hashlib.sha1(namespace + name.encode()).hexdigest()  # noqa: S324
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:32]}"


def event_id(epoch: str, sequence: int, event_type: str = "", viewer_id: str = "") -> str:
    """``uuid5(epoch, "sequence:type:viewer")``, computed without the uuid module's overhead."""
    return _uuid5(_namespace(epoch), f"{sequence}:{event_type}:{viewer_id}")


class Envelope:
    """Encodes the events of one poll of one cluster: what they share is done once.

    The cluster, the epoch's namespace and the poll's time are the same for every event of a
    poll, so the JSON around each viewer record is assembled from ready-made pieces; only the
    id, the subject, the sequence and the data are per event. The bytes are those of
    ``encode_event``: same keys, same order, same escaping (``tests/test_envelope.py``).
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
        """The event's id and its JSON; ``record`` is embedded byte for byte."""
        identifier = _uuid5(self._namespace, f"{sequence}:{event_type}:{subject}")
        rest = _encoder.encode(data)[1:-1] if data else b""
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
                b"," + rest + b"}}" if rest else b"}}",
            )
        )
        return identifier, body

    def encode_emission(self, emission: Emission, sequence: int) -> tuple[str, bytes]:
        """The id and JSON of the event an emission becomes at ``sequence``."""
        return self.encode(
            emission.type, emission.viewer_id, emission.record, render_data(emission), sequence
        )


def render_data(emission: Emission) -> dict[str, Any]:
    """The event's ``data`` fields besides ``viewer``, as ``docs/events.md`` documents them."""
    if isinstance(emission, Connected):
        return {}
    if isinstance(emission, Disconnected):
        return {"lastSeenAt": iso_time(emission.last_seen_at)}
    if isinstance(emission, HealthChanged):
        return {
            "previous": {
                "healthScore": _number(emission.previous_score),
                "healthGrade": emission.previous_grade,
            },
            "threshold": _number(emission.threshold),
        }
    raise TypeError(f"not an emission: {type(emission).__name__}")


def encode_emission(
    emission: Emission, *, cluster: str, sequence: int, epoch: str, time_ms: int
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
    """The event's id and its JSON; the viewer record is embedded byte for byte."""
    envelope = Envelope(cluster=cluster, epoch=epoch, time_ms=time_ms)
    return envelope.encode(event_type, viewer_id, record, data, sequence)


def _number(value: float | None) -> float | int | None:
    """Whole numbers as ints, the way the API writes scores."""
    if value is not None and value == int(value):
        return int(value)
    return value
