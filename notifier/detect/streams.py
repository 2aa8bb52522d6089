"""The stream (audience) rules (SPEC 4.1), as one pure function: (states, changes) -> events.

Beside ``rules.detect`` and as pure: no Redis, no HTTP, no clock. After a complete poll the
caller hands in only the viewers whose part in an audience changed, each as a ``(before,
after)`` pair of ``Member`` (None: in no audience): a join, a leave, a move to another stream,
a measured or dropped flip, a new country. Only the streams those pairs touch are evaluated
and only those whose state differs are returned, so the work and the writes grow with the
changes, never with the audience (a state is counters, not a list of its viewers).

A stream is ``(applicationId, streamKey)``. ``member`` decides who is in an audience: a viewer
with both ids (non-empty strings) and a ``harnessType`` of ``harness_types``; anyone else, an
unknown harness type included, simply does not count. ``measured``: the viewer has had a poll
with data; ``dropped``: its last health event is ``viewer.health_dropped`` (a drop implies a
measurement, so dropped viewers are measured). A ``countryCode`` or ``deviceType`` the record
lacks counts under the value None (``null`` in a breakdown row).

- ``stream.audience_started``: the audience went from none to one or more.
- ``stream.audience_crossed``: ``up`` when viewers >= T for a T of ``audience_thresholds`` not
  reached; ``down`` when viewers < T * (1 - ``audience_hysteresis``) for a T reached. One event
  per threshold crossed, in the order crossed: up ascending, down descending. A threshold
  taken out of the config is forgotten silently; one added counts from the stream's next change.
- ``stream.health_degraded``: share = dropped / measured (0 when measured is 0) >=
  ``degraded_share`` and dropped >= ``degraded_min_viewers``. ``stream.health_recovered``: once
  degraded, share < ``recovered_share`` or dropped < ``degraded_min_viewers``. In between the
  state holds. An incident's peaks are over the polls in which the stream was degraded.
- ``stream.audience_ended``: the audience went from some to none. Its down-crossings of every
  threshold it had reached come first; an open incident ends with it (``ended_degraded``),
  never with a recovery.
- Order: streams as they first appear in the changes; per stream, started, crossings (down,
  then up), the health event, ended. ``initial`` (the first poll from no state) marks the
  started events and up-crossings.
- ``sessions``: the viewers that joined the audience while it lasted (a viewer that comes back
  or moves back from another stream joins again).
- Breakdown: per attribute, up to ``BREAKDOWN_ROWS`` rows, most dropped first, then most
  viewers, then by value (None last).

``adopt`` takes the audiences as they are when stream events are turned on over existing
viewer state, and emits nothing: each is started at that poll with its viewers as sessions and
peak, and every threshold it is at or above is reached. It is adopted *not* degraded, whatever
its counts: the health rule applies at its next change, so a stream degraded at adoption emits
``stream.health_degraded`` then, and a recovery never comes without a degradation before it.

What an audience is made of (``Member``, ``StreamState``, the counters) is in ``tally``.

Bad input crashes nothing and invents no event: a change with ``before == after`` is skipped, a
leave the state never counted floors the counters at zero, a clock going back gives 0 ms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from notifier.detect.tally import (
    BREAKDOWN_ROWS,
    Change,
    Member,
    StreamId,
    StreamState,
    Tally,
    member,
    tally_for,
)
from notifier.events import (
    AudienceCrossed,
    AudienceEnded,
    AudienceStarted,
    AudienceSummary,
    Incident,
    StreamDegraded,
    StreamRecovered,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from notifier.detect.settings import AudienceSettings
    from notifier.events import StreamEmission

__all__ = [
    "BREAKDOWN_ROWS",
    "Change",
    "Member",
    "StreamDetection",
    "StreamId",
    "StreamState",
    "adopt",
    "apply_streams",
    "member",
    "reconcile",
]


@dataclass(frozen=True, slots=True)
class StreamDetection:
    """The stream side of one complete poll."""

    changed: dict[StreamId, StreamState | None]  # only states that differ; None: delete it
    emissions: list[StreamEmission]  # in emission order


def apply_streams(
    states: Mapping[StreamId, StreamState],
    changes: Iterable[Change],
    *,
    polled_at: int,
    settings: AudienceSettings,
    initial: bool,
    recheck: Iterable[StreamId] = (),
) -> StreamDetection:
    """Apply one complete poll's changed viewers to the stream states (the module's rules).

    ``recheck``: streams to evaluate even if no change touches them (``reconcile`` says which).
    """
    tallies: dict[StreamId, Tally] = {}
    for stream in recheck:
        if stream in states:
            tally_for(tallies, states, stream)
    for before, after in changes:
        if before == after:
            continue
        if before is not None:
            tally_for(tallies, states, before.stream).count(before, -1)
        if after is not None:
            tally = tally_for(tallies, states, after.stream)
            tally.count(after, 1)
            if before is None or before.stream != after.stream:
                tally.joins += 1
    changed: dict[StreamId, StreamState | None] = {}
    poll = _Poll(polled_at, settings, initial, [])
    for stream, tally in tallies.items():
        old = states.get(stream)
        new = poll.settle(stream, old, tally)
        if new != old:
            changed[stream] = new
    return StreamDetection(changed=changed, emissions=poll.out)


def adopt(
    members: Iterable[Member], *, polled_at: int, settings: AudienceSettings
) -> dict[StreamId, StreamState]:
    """The states of the audiences as they are, when stream events are turned on; no events."""
    tallies: dict[StreamId, Tally] = {}
    for one in members:
        tally_for(tallies, {}, one.stream).count(one, 1)
    return {
        stream: tally.freeze(
            started_at=polled_at,
            peak_viewers=tally.viewers,
            peak_at=polled_at,
            sessions=tally.viewers,
            reached=tuple(t for t in settings.audience_thresholds if tally.viewers >= t),
        )
        for stream, tally in tallies.items()
        if tally.viewers
    }


def reconcile(
    stored: Mapping[StreamId, StreamState],
    members: Iterable[Member],
    *,
    polled_at: int,
    settings: AudienceSettings,
) -> tuple[dict[StreamId, StreamState], set[StreamId]]:
    """The stream states for the tracked viewers as loaded, and the streams to ``recheck``.

    A poll's stream states are written with its last chunk; should a stop half-way have kept
    them from Redis, the viewers' states written before it are the truth. So after a load the
    counts are taken from the tracked viewers: a stored stream whose counts differ keeps its
    flags and peaks with the counts corrected, and is rechecked at the next poll (an audience
    that is no longer there then ends, a crossing or recovery that happened is emitted); an
    audience with no stored state is adopted (``adopt``: no events).
    """
    tallies: dict[StreamId, Tally] = {}
    for one in members:
        tally_for(tallies, {}, one.stream).count(one, 1)
    counted: dict[StreamId, StreamState] = {}
    for stream, tally in tallies.items():
        if tally.viewers and stream not in stored:
            counted[stream] = tally.freeze(
                started_at=polled_at,
                peak_viewers=tally.viewers,
                peak_at=polled_at,
                sessions=tally.viewers,
                reached=tuple(t for t in settings.audience_thresholds if tally.viewers >= t),
            )
    dirty: set[StreamId] = set()
    for stream, state in stored.items():
        tally = tallies.get(stream) or Tally(None)
        fixed = msgspec.structs.replace(
            state,
            viewers=tally.viewers,
            measured=tally.measured,
            dropped=tally.dropped,
            countries=tally.countries,
            harnesses=tally.harnesses,
            devices=tally.devices,
        )
        counted[stream] = fixed
        if fixed != state:
            dirty.add(stream)
    return counted, dirty


# --- the rules ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Poll:
    """One poll's constants, and the events it has decided so far."""

    polled_at: int
    settings: AudienceSettings
    initial: bool
    out: list[StreamEmission]

    def settle(self, stream: StreamId, old: StreamState | None, tally: Tally) -> StreamState | None:
        """The stream's state after the poll (None: no audience); its events go to ``out``."""
        app, key = stream
        viewers = tally.viewers
        if old is None:
            if viewers == 0:
                return None
            self.out.append(AudienceStarted(app, key, viewers, initial=self.initial))
            old = tally.freeze(
                started_at=self.polled_at, peak_viewers=0, peak_at=self.polled_at, sessions=0
            )
        elif viewers == 0:
            self._end(stream, old, tally)
            return None
        peak, peak_at = old.peak_viewers, old.peak_at
        if viewers > peak:
            peak, peak_at = viewers, self.polled_at
        reached = self._cross(stream, old.reached, viewers, peak)
        since, peak_dropped, peak_share, degraded_ms = self._health(stream, old, tally)
        return tally.freeze(
            started_at=old.started_at,
            peak_viewers=peak,
            peak_at=peak_at,
            sessions=old.sessions + tally.joins,
            reached=reached,
            degraded_since=since,
            peak_dropped=peak_dropped,
            peak_share=peak_share,
            degraded_ms=degraded_ms,
        )

    def _cross(
        self, stream: StreamId, before: tuple[int, ...], viewers: int, peak: int
    ) -> tuple[int, ...]:
        """The crossings from ``before``; the thresholds reached after them."""
        configured = self.settings.audience_thresholds
        reached = set(before)  # one no longer configured is forgotten below
        floor = 1 - self.settings.audience_hysteresis
        for threshold in reversed(configured):
            if threshold in reached and viewers < threshold * floor:
                reached.discard(threshold)
                self.out.append(
                    AudienceCrossed(*stream, threshold, "down", viewers, peak, initial=False)
                )
        for threshold in configured:
            if threshold not in reached and viewers >= threshold:
                reached.add(threshold)
                self.out.append(
                    AudienceCrossed(*stream, threshold, "up", viewers, peak, initial=self.initial)
                )
        return tuple(t for t in configured if t in reached)

    def _health(
        self, stream: StreamId, old: StreamState, tally: Tally
    ) -> tuple[int | None, int, float, int]:
        """Degraded or recovered; the incident (since, peaks) and degraded_ms after it."""
        settings, polled_at = self.settings, self.polled_at
        since, peak_dropped, peak_share = old.degraded_since, old.peak_dropped, old.peak_share
        viewers, measured, dropped = tally.viewers, tally.measured, tally.dropped
        share = dropped / measured if measured else 0.0
        if since is None:
            if share >= settings.degraded_share and dropped >= settings.degraded_min_viewers:
                breakdown = tally.breakdown()
                self.out.append(
                    StreamDegraded(*stream, viewers, measured, dropped, share, breakdown)
                )
                return polled_at, dropped, share, old.degraded_ms
            return None, 0, 0.0, old.degraded_ms
        if share < settings.recovered_share or dropped < settings.degraded_min_viewers:
            incident = Incident(since, max(0, polled_at - since), peak_dropped, peak_share)
            breakdown = tally.breakdown()
            self.out.append(
                StreamRecovered(*stream, viewers, measured, dropped, share, breakdown, incident)
            )
            return None, 0, 0.0, old.degraded_ms + incident.duration_ms
        return since, max(peak_dropped, dropped), max(peak_share, share), old.degraded_ms

    def _end(self, stream: StreamId, old: StreamState, tally: Tally) -> None:
        """Down-crossings of every threshold reached, then the summary."""
        for threshold in reversed(self.settings.audience_thresholds):
            if threshold in old.reached:
                self.out.append(
                    AudienceCrossed(*stream, threshold, "down", 0, old.peak_viewers, initial=False)
                )
        degraded_ms = old.degraded_ms
        if old.degraded_since is not None:
            degraded_ms += max(0, self.polled_at - old.degraded_since)
        summary = AudienceSummary(
            started_at=old.started_at,
            duration_ms=max(0, self.polled_at - old.started_at),
            peak_viewers=old.peak_viewers,
            peak_at=old.peak_at,
            sessions=old.sessions + tally.joins,
            degraded_ms=degraded_ms,
            ended_degraded=old.degraded_since is not None,
        )
        self.out.append(AudienceEnded(*stream, summary))
