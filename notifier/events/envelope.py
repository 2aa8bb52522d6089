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


def event_id(epoch: str, sequence: int, event_type: str = "", viewer_id: str = "") -> str:
    """``uuid5(epoch, "sequence:type:viewer")``, computed without the uuid module's overhead."""
    digest = bytearray(
        hashlib.sha1(  # noqa: S324 - RFC 4122 name-based UUIDs are defined with SHA-1
            _namespace(epoch) + f"{sequence}:{event_type}:{viewer_id}".encode()
        ).digest()[:16]
    )
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


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
    """The id and JSON of the event an emission becomes at ``sequence``."""
    return encode_event(
        cluster=cluster,
        event_type=emission.type,
        viewer_id=emission.viewer_id,
        record=emission.record,
        data=render_data(emission),
        sequence=sequence,
        epoch=epoch,
        time_ms=time_ms,
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
    identifier = event_id(epoch, sequence, event_type, viewer_id)
    event = {
        "specversion": "1.0",
        "id": identifier,
        "source": f"/clusters/{cluster}",
        "type": event_type,
        "subject": viewer_id,
        "time": iso_time(time_ms),
        "datacontenttype": "application/json",
        "cluster": cluster,
        "sequence": sequence,
        "data": {"viewer": msgspec.Raw(record), **data},
    }
    return identifier, _encoder.encode(event)


def _number(value: float | None) -> float | int | None:
    """Whole numbers as ints, the way the API writes scores."""
    if value is not None and value == int(value):
        return int(value)
    return value
