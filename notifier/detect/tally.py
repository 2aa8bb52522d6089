"""What one audience is made of: its members, its counters, and their stored state.

``streams`` holds the rules; this module the vocabulary they count in (``member`` decides who
is in an audience) and ``Tally``, the counters of one stream while a poll is applied.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, NamedTuple

import msgspec

from notifier.events import Breakdown, BreakdownRow

if TYPE_CHECKING:
    from collections.abc import Mapping

    from notifier.detect.settings import AudienceSettings

__all__ = [
    "BREAKDOWN_ROWS",
    "Change",
    "Counts",
    "Member",
    "StreamId",
    "StreamState",
    "Tally",
    "member",
    "tally_for",
]

BREAKDOWN_ROWS = 5

Counts = dict[str, tuple[int, int]]
"""Value -> (viewers, dropped); ``""`` stands for None (``member`` never yields ``""``)."""


class StreamId(NamedTuple):
    """A stream within a cluster."""

    application_id: str
    stream_key: str


class Member(msgspec.Struct, frozen=True, gc=False):
    """What one audience viewer contributes to its stream's counts."""

    stream: StreamId
    harness_type: str
    country_code: str | None = None
    device_type: str | None = None
    measured: bool = False
    dropped: bool = False


Change = tuple[Member | None, Member | None]
"""One viewer's part in the audiences, before and after a poll (None: in none)."""


class StreamState(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """What is remembered of one live audience: counters, peaks and the open incident."""

    viewers: int
    measured: int
    dropped: int
    countries: Counts
    harnesses: Counts
    devices: Counts
    started_at: int  # ms: the poll that started (or adopted) the audience
    peak_viewers: int
    peak_at: int  # ms: the first poll that reached the peak
    sessions: int  # viewers that joined the audience while it lasted
    reached: tuple[int, ...] = ()  # thresholds reached and not fallen below, ascending
    degraded_since: int | None = None  # ms: the poll that emitted stream.health_degraded
    peak_dropped: int = 0  # of the open incident
    peak_share: float = 0.0
    degraded_ms: int = 0  # of the incidents that recovered


def member(
    *,
    application_id: object,
    stream_key: object,
    harness_type: object,
    country_code: object = None,
    device_type: object = None,
    measured: bool,
    dropped: bool,
    settings: AudienceSettings,
) -> Member | None:
    """The viewer's part in its stream's audience, from its record's fields; None if in none."""
    app, key = _text(application_id), _text(stream_key)
    if app is None or key is None:
        return None
    if not isinstance(harness_type, str) or harness_type not in settings.harness_types:
        return None
    return Member(
        StreamId(app, key),
        harness_type,
        _text(country_code),
        _text(device_type),
        measured or dropped,
        dropped,
    )


# --- counting -----------------------------------------------------------------------------------


class Tally:
    """One touched stream's counters while a poll is applied (a copy: states stay frozen)."""

    __slots__ = ("countries", "devices", "dropped", "harnesses", "joins", "measured", "viewers")

    def __init__(self, state: StreamState | None) -> None:
        self.viewers = state.viewers if state else 0
        self.measured = state.measured if state else 0
        self.dropped = state.dropped if state else 0
        self.countries: Counts = dict(state.countries) if state else {}
        self.harnesses: Counts = dict(state.harnesses) if state else {}
        self.devices: Counts = dict(state.devices) if state else {}
        self.joins = 0

    def count(self, one: Member, sign: int) -> None:
        """Add (``sign`` 1) or take away (-1) one member; counters never fall below zero."""
        dropped = sign * one.dropped
        self.viewers = max(0, self.viewers + sign)
        self.measured = max(0, self.measured + sign * one.measured)
        self.dropped = max(0, self.dropped + dropped)
        _bump(self.countries, one.country_code or "", sign, dropped)
        _bump(self.harnesses, one.harness_type, sign, dropped)
        _bump(self.devices, one.device_type or "", sign, dropped)

    def breakdown(self) -> Breakdown:
        """The rows of a health event."""
        return Breakdown(_rows(self.countries), _rows(self.harnesses), _rows(self.devices))

    def freeze(
        self,
        *,
        started_at: int,
        peak_viewers: int,
        peak_at: int,
        sessions: int,
        reached: tuple[int, ...] = (),
        degraded_since: int | None = None,
        peak_dropped: int = 0,
        peak_share: float = 0.0,
        degraded_ms: int = 0,
    ) -> StreamState:
        """These counters with the rest of a stream's state."""
        return StreamState(
            self.viewers,
            self.measured,
            self.dropped,
            self.countries,
            self.harnesses,
            self.devices,
            started_at,
            peak_viewers,
            peak_at,
            sessions,
            reached,
            degraded_since,
            peak_dropped,
            peak_share,
            degraded_ms,
        )


def tally_for(
    tallies: dict[StreamId, Tally], states: Mapping[StreamId, StreamState], stream: StreamId
) -> Tally:
    tally = tallies.get(stream)
    if tally is None:
        tally = tallies[stream] = Tally(states.get(stream))
    return tally


def _bump(counts: Counts, value: str, viewers: int, dropped: int) -> None:
    had_viewers, had_dropped = counts.get(value, (0, 0))
    now = max(0, had_viewers + viewers)
    if now:
        counts[value] = (now, max(0, had_dropped + dropped))
    else:
        counts.pop(value, None)


def _rows(counts: Counts) -> tuple[BreakdownRow, ...]:
    top = heapq.nsmallest(
        BREAKDOWN_ROWS,
        counts.items(),
        key=lambda item: (-item[1][1], -item[1][0], item[0] == "", item[0]),
    )
    return tuple(BreakdownRow(value or None, viewers, dropped) for value, (viewers, dropped) in top)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
