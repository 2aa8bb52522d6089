"""An event as an entry of a cluster's stream: the fields written, and the event read back.

Each entry of ``P:{C}:events`` has the fields ``type`` (the event type), ``id`` (the event id)
and ``event`` (the whole event as JSON) — ``docs/events.md``, "Where events are". They are named
here and nowhere else: the commit script is handed the names, sinks and commands read entries
through ``decode_event``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import msgspec

__all__ = [
    "ENTRY_FIELDS",
    "EVENT_FIELD",
    "ID_FIELD",
    "TYPE_FIELD",
    "EncodedEvent",
    "Event",
    "UnreadableEvent",
    "decode_event",
]

TYPE_FIELD: Final = b"type"
ID_FIELD: Final = b"id"
EVENT_FIELD: Final = b"event"
ENTRY_FIELDS: Final = (TYPE_FIELD, ID_FIELD, EVENT_FIELD)
"""The field names of a stream entry, in the order ``EncodedEvent.values`` gives values."""


@dataclass(frozen=True, slots=True)
class EncodedEvent:
    """An event ready for the stream: its type, id and JSON."""

    type: str
    id: str
    body: bytes

    def values(self) -> tuple[str, str, bytes]:
        """The entry's values, in the order of ``ENTRY_FIELDS``."""
        return self.type, self.id, self.body

    def fields(self) -> dict[bytes, bytes]:
        """The entry's fields, as XADD takes them."""
        return {TYPE_FIELD: self.type.encode(), ID_FIELD: self.id.encode(), EVENT_FIELD: self.body}


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of a cluster's event stream, with the fields sinks filter and group on."""

    cluster: str
    entry_id: str
    id: str
    type: str
    subject: str
    sequence: int
    body: bytes  # the event JSON exactly as in the stream
    stream_key: str | None = None
    application_id: str | None = None
    harness_type: str | None = None
    country: str | None = None

    def payload(self) -> dict[str, Any]:
        """The whole event, decoded."""
        value: dict[str, Any] = msgspec.json.decode(self.body)
        return value

    def encoded(self) -> EncodedEvent:
        """The event as it is written to a stream."""
        return EncodedEvent(type=self.type, id=self.id, body=self.body)


class UnreadableEvent(ValueError):  # noqa: N818 - reads as what the entry is
    """A stream entry that is not an event this version understands."""


class _Viewer(msgspec.Struct):
    streamKey: Any = None  # noqa: N815 - the API's spelling
    applicationId: Any = None  # noqa: N815
    harnessType: Any = None  # noqa: N815
    countryCode: Any = None  # noqa: N815


class _Data(msgspec.Struct):
    viewer: _Viewer = msgspec.field(default_factory=_Viewer)


class _Envelope(msgspec.Struct):
    id: str
    type: str
    subject: str
    sequence: int
    data: _Data = msgspec.field(default_factory=_Data)


_decode_envelope = msgspec.json.Decoder(_Envelope).decode


def decode_event(cluster: str, entry_id: str, fields: dict[bytes, bytes]) -> Event:
    """The event of one stream entry; ``UnreadableEvent`` if it is not one."""
    body = fields.get(EVENT_FIELD)
    if body is None:
        raise UnreadableEvent(f"the entry has no {EVENT_FIELD.decode()!r} field")
    try:
        envelope = _decode_envelope(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise UnreadableEvent(f"the event is not a storm-notifier event ({exc})") from None
    viewer = envelope.data.viewer
    return Event(
        cluster=cluster,
        entry_id=entry_id,
        id=envelope.id,
        type=envelope.type,
        subject=envelope.subject,
        sequence=envelope.sequence,
        body=body,
        stream_key=_text(viewer.streamKey),
        application_id=_text(viewer.applicationId),
        harness_type=_text(viewer.harnessType),
        country=_text(viewer.countryCode),
    )


def _text(value: object) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    return value if isinstance(value, str) else str(value)
