"""The event envelope (SPEC section 4): CloudEvents 1.0, JSON, structured mode.

An event id is derived from the cluster's epoch (a UUID made once, when its state is first
created in Redis) and the event's sequence number: the same change always has the same id,
and ids never repeat, even if a cluster's state is wiped and started again.
"""

from __future__ import annotations

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


def iso_time(ms: int) -> str:
    """Unix milliseconds as RFC 3339 UTC with milliseconds: ``2026-02-05T08:22:40.071Z``."""
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def event_id(epoch: str, sequence: int) -> str:
    """The id of event number ``sequence`` of the cluster whose epoch is ``epoch``."""
    return str(uuid.uuid5(uuid.UUID(epoch), str(sequence)))


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
    identifier = event_id(epoch, sequence)
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
