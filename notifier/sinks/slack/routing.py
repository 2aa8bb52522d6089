"""Where each event of a delivery goes in Slack app mode (SPEC 5.1): pure, no I/O.

Per stream, in ``sequence`` order, knowing the stream's latest incident (its ``Window``):

    viewer.health_dropped/_recovered   the incident's thread (``Reply``) when the incident holds
                                       it: from the poll that opened it (its own drops come
                                       first in the stream) up to the event that resolved it;
                                       also when a degradation follows in the batch; else the
                                       channel digest
    stream.health_degraded             ``Open``: the incident message
    stream.health_recovered            ``Resolve`` if an incident is open, else the digest
    stream.audience_ended              ``Resolve`` and a quiet ``Audience`` (updates the audience
                                       message if there is one) while degraded, else ``Audience``
    stream.audience_started/_crossed   ``Audience``: the stream's audience message
    anything else                      the channel digest (``Digest``), as in webhook mode

The worker orders events per subject (a viewer, a stream), not across them, so a viewer's drop
may be delivered after the stream event that came later in the stream: the window, not the
order of arrival, says whose it is. The digest comes first (one message for the batch's other
events), then the steps in order; the thread's events go out as one reply before the step
that resolves, or at the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from notifier.events import STREAM_EVENT_TYPES
from notifier.sinks.slack.text import moment

if TYPE_CHECKING:
    from collections.abc import Hashable, Mapping, Sequence

    from notifier.sinks.base import Event

__all__ = [
    "Audience",
    "Digest",
    "Item",
    "Open",
    "Reply",
    "Resolve",
    "Step",
    "StreamRef",
    "Window",
    "group_key",
    "plan",
    "stream_key_of",
    "stream_of",
    "window_of",
]

DEGRADED: Final = "stream.health_degraded"
RECOVERED: Final = "stream.health_recovered"
ENDED: Final = "stream.audience_ended"
AUDIENCE: Final = frozenset({"stream.audience_started", "stream.audience_crossed"})
VIEWER_HEALTH: Final = frozenset({"viewer.health_dropped", "viewer.health_recovered"})
_EARLIEST: Final = datetime.min.replace(tzinfo=UTC)  # a degradation of no readable time


@dataclass(frozen=True, slots=True)
class StreamRef:
    """A stream of a cluster: ``(applicationId, streamKey)``."""

    application_id: str | None
    stream_key: str


@dataclass(frozen=True, slots=True)
class Item:
    """An event of the delivery with its decoded JSON."""

    event: Event
    payload: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Digest:
    """Events posted to the channel as one message, as in webhook mode."""

    items: tuple[Item, ...]


@dataclass(frozen=True, slots=True)
class Open:
    """A ``stream.health_degraded``: the incident message is posted (once)."""

    item: Item


@dataclass(frozen=True, slots=True)
class Reply:
    """Viewer health events replied in the open incident's thread as one message."""

    items: tuple[Item, ...]


@dataclass(frozen=True, slots=True)
class Resolve:
    """The event that ends the open incident: the message turns resolved, the thread is told."""

    item: Item


@dataclass(frozen=True, slots=True)
class Audience:
    """An audience event for the stream's audience message; ``quiet``: update it if there is
    one, post none (the incident message already tells the end)."""

    item: Item
    quiet: bool = False


Step = Digest | Open | Reply | Resolve | Audience


@dataclass(frozen=True, slots=True)
class Window:
    """Which events belong to an incident: from the time of the poll that opened it, up to
    (not including) the ``sequence`` of the event that resolved it (None: open)."""

    opened_at: datetime
    resolved_by: str | None = None  # the resolving event's id
    resolved_at: int | None = None  # its sequence

    @property
    def is_open(self) -> bool:
        """Not resolved."""
        return self.resolved_by is None

    def holds(self, item: Item) -> bool:
        """Is this event of the incident's time?"""
        when = moment(item.payload.get("time"))
        if when is None or when < self.opened_at:
            return False
        return self.resolved_at is None or item.event.sequence < self.resolved_at

    def closed(self, item: Item) -> Window:
        """This window, resolved by ``item``."""
        return Window(self.opened_at, item.event.id, item.event.sequence)


def window_of(opened: Mapping[str, Any], resolved: Mapping[str, Any] | None) -> Window | None:
    """The window of an incident from its opening and resolving events (as records keep them)."""
    at = moment(opened.get("time"))
    if at is None:
        return None
    if resolved is None:
        return Window(at)
    sequence = resolved.get("sequence")
    resolved_id = resolved.get("id")
    return Window(
        at,
        resolved_id if isinstance(resolved_id, str) else "?",
        sequence if isinstance(sequence, int) else 0,  # unknown: no later event is its
    )


def stream_key_of(event: Event) -> str | None:
    """The stream a message is about: the viewer's streamKey, or a stream event's subject."""
    if event.stream_key is None and event.type in STREAM_EVENT_TYPES:
        return event.subject
    return event.stream_key


def group_key(event: Event) -> Hashable:
    """Events of one (cluster, streamKey) go into one delivery."""
    return (event.cluster, stream_key_of(event))


def stream_of(item: Item) -> StreamRef | None:
    """The stream of an event: a stream event's ``data.stream``, a viewer's record; None for a
    viewer without a streamKey."""
    event = item.event
    if event.type.startswith("stream."):
        data = item.payload.get("data")
        stream = data.get("stream") if isinstance(data, dict) else None
        if isinstance(stream, dict):
            key, app = stream.get("streamKey"), stream.get("applicationId")
            if isinstance(key, str):
                return StreamRef(app if isinstance(app, str) else None, key)
        return StreamRef(event.application_id, event.subject)
    if event.stream_key is None:
        return None
    return StreamRef(event.application_id, event.stream_key)


def plan(items: Sequence[Item], incident: Window | None) -> list[Step]:
    """The steps for one stream's events (in ``sequence`` order); see the module docstring.

    ``incident``: the stream's latest incident before the delivery, if it has one.
    """
    steps: list[Step] = []
    digest: list[Item] = []
    thread: list[Item] = []
    window = incident
    degraded_after = _degraded_after(items)
    for index, item in enumerate(items):
        kind = item.event.type
        if kind in VIEWER_HEALTH:
            ours = degraded_after[index] or (window is not None and window.holds(item))
            (thread if ours else digest).append(item)
        elif kind == DEGRADED:
            held = [window is not None and window.holds(i) for i in thread]
            if any(held):  # events of the incident before this one: its thread
                steps.append(Reply(tuple(i for i, h in zip(thread, held, strict=True) if h)))
                thread = [i for i, h in zip(thread, held, strict=True) if not h]
            steps.append(Open(item))
            window = Window(moment(item.payload.get("time")) or _EARLIEST)
        elif kind in (RECOVERED, ENDED) and window is not None and _resolves(window, item):
            if thread:
                steps.append(Reply(tuple(thread)))
                thread = []
            steps.append(Resolve(item))
            if kind == ENDED:
                steps.append(Audience(item, quiet=True))
            window = window.closed(item)
        elif kind == ENDED or kind in AUDIENCE:
            steps.append(Audience(item))
        else:
            digest.append(item)
    if thread:
        steps.append(Reply(tuple(thread)))
    return [Digest(tuple(digest)), *steps] if digest else steps


def _resolves(window: Window, item: Item) -> bool:
    """Does this recovery or end resolve the incident (or did it, and is delivered again)?"""
    return window.is_open or window.resolved_by == item.event.id


def _degraded_after(items: Sequence[Item]) -> list[bool]:
    """For each position: does a ``stream.health_degraded`` come later in the batch?"""
    out = [False] * len(items)
    seen = False
    for index in range(len(items) - 1, -1, -1):
        out[index] = seen
        seen = seen or items[index].event.type == DEGRADED
    return out
