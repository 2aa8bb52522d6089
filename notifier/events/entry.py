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


class Event(msgspec.Struct, frozen=True, gc=False):
    """One entry of a cluster's event stream, with the fields sinks filter and group on.

    Frozen, compared and hashed by value. Its fields are text, numbers and bytes, so it can
    never be part of a reference cycle: the garbage collector does not track it (``gc=False``).
    A sink worker holds thousands of events at once; tracked, each collection would walk them
    all and move them up the generations until full collections ran every few thousand events.
    """

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
    initial: bool = False  # data.initial: the viewer (or audience) was there before the notifier

    @property
    def is_stream_event(self) -> bool:
        """A ``stream.*`` event: about an audience, with no viewer (and no harness or country)."""
        return self.type.startswith("stream.")

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
    stream: _Viewer | None = None  # a stream event's {applicationId, streamKey}
    initial: Any = False


class _Envelope(msgspec.Struct):
    id: str
    type: str
    subject: str
    sequence: int
    data: _Data = msgspec.field(default_factory=_Data)


class _TextViewer(msgspec.Struct):
    """``_Viewer`` when every value is a string or missing: the usual case, read directly."""

    streamKey: str | None = None  # noqa: N815 - the API's spelling
    applicationId: str | None = None  # noqa: N815
    harnessType: str | None = None  # noqa: N815
    countryCode: str | None = None  # noqa: N815


class _TextData(msgspec.Struct):
    viewer: _TextViewer = msgspec.field(default_factory=_TextViewer)
    stream: _TextViewer | None = None
    initial: bool = False


class _TextEnvelope(msgspec.Struct):
    id: str
    type: str
    subject: str
    sequence: int
    data: _TextData = msgspec.field(default_factory=_TextData)


_decode_envelope = msgspec.json.Decoder(_Envelope).decode
_decode_text_envelope = msgspec.json.Decoder(_TextEnvelope).decode


def decode_event(cluster: str, entry_id: str, fields: dict[bytes, bytes]) -> Event:
    """The event of one stream entry; ``UnreadableEvent`` if it is not one.

    Viewer fields that are not strings are read as text (numbers) or as missing (booleans).
    A stream event's stream key and application come from ``data.stream``.
    """
    body = fields.get(EVENT_FIELD)
    if body is None:
        raise UnreadableEvent(f"the entry has no {EVENT_FIELD.decode()!r} field")
    try:
        fast = _decode_text_envelope(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return _decode_any(cluster, entry_id, body)
    data = fast.data
    viewer = data.viewer if data.stream is None else data.stream
    return Event(
        cluster,
        entry_id,
        fast.id,
        fast.type,
        fast.subject,
        fast.sequence,
        body,
        viewer.streamKey,
        viewer.applicationId,
        viewer.harnessType,
        viewer.countryCode,
        data.initial,
    )


def _decode_any(cluster: str, entry_id: str, body: bytes) -> Event:
    """``decode_event`` for the rest: viewer values of any type, or an unreadable entry."""
    try:
        envelope = _decode_envelope(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise UnreadableEvent(f"the event is not a storm-notifier event ({exc})") from None
    data = envelope.data
    viewer = data.viewer if data.stream is None else data.stream
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
        initial=data.initial is True,
    )


def _text(value: object) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    return value if isinstance(value, str) else str(value)
