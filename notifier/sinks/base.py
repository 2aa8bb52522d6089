"""The sink interface: an event in, an outcome out.

A sink is a small object with ``deliver(events) -> Outcome`` and ``aclose()``. The worker owns
everything else (reading, ordering, retries, dead letters), so a sink is a few dozen lines:
turn events into one request, say what the answer means.

    Delivered                  done; acknowledge
    Retry(reason, after)       try again on the schedule (not before ``after`` seconds);
                               with counted=False (rate limits) no attempt is used up
    Failed(reason)             permanent: dead-letter it
    Failed(reason, pause=True) the endpoint is gone: pause the sink, the event waits
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Sequence

__all__ = [
    "Batching",
    "Delivered",
    "Event",
    "Failed",
    "Outcome",
    "Retry",
    "Sink",
    "UnreadableEvent",
    "decode_event",
]


@dataclass(frozen=True, slots=True)
class Delivered:
    """The receiver took it."""

    status: int | None = None


@dataclass(frozen=True, slots=True)
class Retry:
    """Worth another attempt, on the schedule, and not before ``after`` seconds if given.

    ``counted`` False is flow control (a receiver's rate limit), not a failure: it does not
    use up an attempt of the schedule.
    """

    reason: str
    status: int | None = None
    after: float | None = None
    counted: bool = True


@dataclass(frozen=True, slots=True)
class Failed:
    """Permanent: the event goes to the dead letters, or with ``pause`` the sink stops."""

    reason: str
    status: int | None = None
    pause: bool = False


Outcome = Delivered | Retry | Failed


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


@dataclass(frozen=True, slots=True)
class Batching:
    """How the worker groups ready events into one ``deliver`` call.

    Events with the same ``key`` (all of them if None) go together, at most ``size``, waiting
    up to ``wait`` seconds for more. Only the oldest waiting event of each viewer is ever
    ready, so a batch never holds two events of one viewer out of order.
    """

    size: int = 1
    wait: float = 0.0
    key: Callable[[Event], Hashable] | None = None


class Sink(Protocol):
    """What the worker asks of a sink."""

    @property
    def batching(self) -> Batching:
        """How to group events for ``deliver``."""
        ...

    async def deliver(self, events: Sequence[Event]) -> Outcome:
        """Deliver the events in one go; never raise for a failure, return it."""
        ...

    async def aclose(self) -> None:
        """Release connections; idempotent."""
        ...


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
    body = fields.get(b"event")
    if body is None:
        raise UnreadableEvent("the entry has no 'event' field")
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
