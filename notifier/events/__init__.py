"""The wire: events as emitted, as written to a stream, as read back, and as dead letters.

``emissions`` (what the rules decide) → ``envelope`` (CloudEvents JSON, ids, times) →
``entry`` (the stream entry's fields, and ``Event``, an entry read back) → ``dead_letter``.
Everything that writes or parses one of these formats goes through this package.
"""

from notifier.events.dead_letter import DeadLetter
from notifier.events.emissions import (
    AudienceCrossed,
    AudienceEnded,
    AudienceStarted,
    AudienceSummary,
    Breakdown,
    BreakdownRow,
    Connected,
    CrossingDirection,
    Disconnected,
    Emission,
    HealthChange,
    HealthChanged,
    Incident,
    StreamDegraded,
    StreamEmission,
    StreamRecovered,
)
from notifier.events.entry import (
    ENTRY_FIELDS,
    EVENT_FIELD,
    EncodedEvent,
    Event,
    UnreadableEvent,
    decode_event,
)
from notifier.events.envelope import (
    CONTENT_TYPE,
    EVENT_TYPES,
    Envelope,
    EventType,
    encode_emission,
    encode_event,
    event_id,
    iso_time,
    render_data,
)

__all__ = [
    "CONTENT_TYPE",
    "ENTRY_FIELDS",
    "EVENT_FIELD",
    "EVENT_TYPES",
    "AudienceCrossed",
    "AudienceEnded",
    "AudienceStarted",
    "AudienceSummary",
    "Breakdown",
    "BreakdownRow",
    "Connected",
    "CrossingDirection",
    "DeadLetter",
    "Disconnected",
    "Emission",
    "EncodedEvent",
    "Envelope",
    "Event",
    "EventType",
    "HealthChange",
    "HealthChanged",
    "Incident",
    "StreamDegraded",
    "StreamEmission",
    "StreamRecovered",
    "UnreadableEvent",
    "decode_event",
    "encode_emission",
    "encode_event",
    "event_id",
    "iso_time",
    "render_data",
]
