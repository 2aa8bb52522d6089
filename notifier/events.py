"""The event envelope (SPEC section 4): CloudEvents 1.0, JSON, structured mode.

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

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["EVENT_TYPES", "EventType", "encode_event", "event_id", "iso_time"]

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
