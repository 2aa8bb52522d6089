"""The dead-letter record: an event a sink gave up on, with why (``P:{C}:dlq:<sink>``).

Fields of a dead-letter entry: the original entry's ``type``, ``id`` and ``event``, plus
``entry`` (its id in the event stream), ``reason``, ``attempts``, ``status`` (the last HTTP
status, empty if none) and ``failed_at`` (RFC 3339). Written and read only through
``DeadLetter`` (``docs/operations.md``, "Dead letters").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from notifier.events.entry import EVENT_FIELD, ID_FIELD, TYPE_FIELD, Event, decode_event

__all__ = ["DeadLetter"]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead letter; ``body`` is the event JSON exactly as it was in the stream."""

    body: bytes
    type: str
    id: str
    entry: str
    reason: str
    attempts: int
    status: int | None
    failed_at: str

    @classmethod
    def of(
        cls, event: Event, *, reason: str, attempts: int, status: int | None, failed_at: str
    ) -> DeadLetter:
        """The dead letter of a readable event."""
        return cls(
            body=event.body,
            type=event.type,
            id=event.id,
            entry=event.entry_id,
            reason=reason,
            attempts=attempts,
            status=status,
            failed_at=failed_at,
        )

    @classmethod
    def of_entry(
        cls, entry_id: str, fields: dict[bytes, bytes], *, reason: str, failed_at: str
    ) -> DeadLetter:
        """The dead letter of an entry that is not a readable event (kept byte for byte)."""
        return cls(
            fields.get(EVENT_FIELD, b""),
            _text(fields.get(TYPE_FIELD, b"")),
            _text(fields.get(ID_FIELD, b"")),
            entry_id,
            reason,
            0,
            None,
            failed_at,
        )

    def fields(self) -> dict[bytes, bytes]:
        """The entry's fields, as XADD takes them."""
        return {
            EVENT_FIELD: self.body,
            TYPE_FIELD: self.type.encode(),
            ID_FIELD: self.id.encode(),
            b"entry": self.entry.encode(),
            b"reason": self.reason.encode(),
            b"attempts": str(self.attempts).encode(),
            b"status": str(self.status or "").encode(),
            b"failed_at": self.failed_at.encode(),
        }

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes]) -> DeadLetter:
        """Read a dead-letter entry back; missing or odd fields read as empty, never fail."""
        attempts = _text(fields.get(b"attempts", b""))
        status = _text(fields.get(b"status", b""))
        return cls(
            body=fields.get(EVENT_FIELD, b""),
            type=_text(fields.get(TYPE_FIELD, b"")),
            id=_text(fields.get(ID_FIELD, b"")),
            entry=_text(fields.get(b"entry", b"")),
            reason=_text(fields.get(b"reason", b"")),
            attempts=int(attempts) if attempts.isdigit() else 0,
            status=int(status) if status.isdigit() else None,
            failed_at=_text(fields.get(b"failed_at", b"")),
        )

    def event(self, cluster: str, dlq_id: str) -> Event:
        """The event to deliver again (its ``entry_id`` is the dead letter's own id)."""
        return decode_event(cluster, dlq_id, {EVENT_FIELD: self.body})

    def describe(self, cluster: str, dlq_id: str) -> dict[str, Any]:
        """The dead letter as ``notifier dlq list`` prints it (one JSON object)."""
        try:
            event: Any = msgspec.json.decode(self.body or b"null")
        except msgspec.DecodeError:
            event = self.body.decode("utf-8", "replace")
        return {
            "cluster": cluster,
            "dlq_id": dlq_id,
            "event_id": self.id,
            "type": self.type,
            "reason": self.reason,
            "attempts": self.attempts,
            "status": self.status,
            "failed_at": self.failed_at,
            "entry": self.entry,
            "event": event,
        }


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")
