"""The detection rules (``docs/events.md``), as one pure function: (state, poll) -> (state, events).

No Redis, no HTTP, no clock: everything comes in as arguments, so the rules can be tested over
any sequence of polls.

- ``viewer.connected``: an id in a complete poll that is not tracked yet.
- ``viewer.disconnected``: a tracked id absent from ``disconnect_after_missed_polls``
  consecutive complete polls; it carries the last record seen and when it was seen.
- ``viewer.health_dropped``: healthScore < ``drop_below`` in ``consecutive_polls`` consecutive
  polls that have data; ``viewer.health_recovered``: after a drop, healthScore >= ``recover_at``
  in ``consecutive_polls`` consecutive polls that have data. A poll without a measurement (or
  without the viewer) neither counts nor resets.
- Per viewer, events come in causal order: connected, drops and recoveries, disconnected.

- ``viewer.connected`` of a poll ``initial`` (one that started from no state: the viewers were
  already watching) says so; ``viewer.disconnected`` carries the session's summary
  (``Session``): when it connected, the polls that saw it, its health over the polls with
  data, its drops and the time spent dropped.

A tracked viewer missing from the list but ``confirmed`` by a lookup counts as seen, at most
``UNLISTED_LIMIT`` polls in a row: paging drift rarely skips a viewer that often, so a viewer
the list keeps leaving out (it no longer matches the filters, say) then counts as missed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from notifier.events import Connected, Disconnected, HealthChanged, Session

if TYPE_CHECKING:
    from collections.abc import Mapping

    from notifier.detect.settings import DetectionSettings, HealthSettings
    from notifier.events import Emission, HealthChange
    from notifier.storm import Viewer

__all__ = ["UNLISTED_LIMIT", "Detection", "Track", "detect"]

UNLISTED_LIMIT = 3


class Track(msgspec.Struct, frozen=True, gc=False):
    """What is remembered of one tracked viewer (how Redis stores it is ``store``'s business).

    ``record`` and ``seen_at`` are the newest in memory; Redis holds them as of the last time
    anything else about the viewer changed (at the latest, the poll in which it went missing),
    so a disconnected event always carries the last record seen. The session's counts
    (``polls`` to ``degraded_ms``) ride along the same way: a restart may lose the polls since
    the viewer was last written, and ``complete`` then says so.
    """

    record: bytes
    seen_at: int  # ms: start of the last complete poll that saw the viewer
    missed: int = 0
    dropped: bool = False
    streak: int = 0  # consecutive polls with data heading for the next health transition
    anchor_score: float | None = None  # the last measurement before the streak began
    anchor_grade: str | None = None
    last_score: float | None = None  # the last measurement (memory; Redis may lag)
    last_grade: str | None = None
    unlisted: int = 0  # consecutive polls seen only through a lookup
    connected_at: int = 0  # ms: the poll that emitted viewer.connected
    polls: int = 0  # complete polls that saw the viewer
    health_min: float | None = None  # over the polls with data
    health_max: float | None = None
    health_sum: float = 0.0
    measured_polls: int = 0
    drops: int = 0  # viewer.health_dropped events of the session
    dropped_at: int | None = None  # ms: the poll of the drop still open
    degraded_ms: int = 0  # from each drop to its recovery, the open one excluded
    complete: bool = True  # False: a restart may have lost polls from the counts

    def session(self) -> Session:
        """The summary a disconnect carries (the open drop lasts to the last poll seen)."""
        degraded = self.degraded_ms
        if self.dropped_at is not None:
            degraded += max(0, self.seen_at - self.dropped_at)
        measured = self.measured_polls
        return Session(
            connected_at=self.connected_at,
            duration_ms=max(0, self.seen_at - self.connected_at),
            polls=self.polls,
            health_min=self.health_min if measured else None,
            health_max=self.health_max if measured else None,
            health_avg=self.health_sum / measured if measured else None,
            measured_polls=measured,
            drops=self.drops,
            degraded_ms=degraded,
            complete=self.complete,
        )

    def persisted_part(self) -> tuple[int, bool, int, float | None, str | None, int, bool]:
        """The fields whose change must reach Redis (the rest may lag behind); a first
        measurement among them (the viewer now counts as measured in its stream)."""
        return (
            self.missed,
            self.dropped,
            self.streak,
            self.anchor_score,
            self.anchor_grade,
            self.unlisted,
            self.last_score is None,
        )


@dataclass(frozen=True, slots=True)
class Detection:
    """The result of one complete poll."""

    state: dict[str, Track]  # every viewer tracked after this poll
    upserts: dict[str, Track]  # entries Redis must write
    deletes: list[str]  # entries Redis must remove
    emissions: list[Emission]  # in emission order

    def changes(self) -> Detection:
        """The writes alone, without the whole state after the poll (what a poll waiting to
        be written keeps: ``backlog``)."""
        return Detection({}, self.upserts, self.deletes, self.emissions)


def detect(
    tracked: Mapping[str, Track],
    seen: Mapping[str, Viewer],
    *,
    polled_at: int,
    settings: DetectionSettings,
    confirmed: Mapping[str, Viewer] | None = None,
    count_misses: bool = True,
    initial: bool = False,
) -> Detection:
    """Apply one complete poll to the tracked state.

    ``seen`` is every viewer the list returned; ``confirmed``, tracked viewers the list left
    out but a lookup found. With ``count_misses`` False (the lookup could not be done), the
    viewers the list left out neither count a miss nor reset one. ``initial``: the poll
    started from no state (its connected events say so).
    """
    state: dict[str, Track] = {}
    upserts: dict[str, Track] = {}
    deletes: list[str] = []
    emissions: list[Emission] = []
    health = settings.health
    drop_below, recover_at = health.drop_below, health.recover_at
    replace = msgspec.structs.replace
    get = tracked.get
    for viewer_id, viewer in seen.items():
        before = get(viewer_id)
        # The common case inline, without an intermediate copy (what _observe_health would do):
        # measured, no streak, and not heading for a transition.
        if (
            before is not None
            and not before.streak
            and (score := viewer.health) is not None
            and (score < recover_at if before.dropped else score >= drop_below)
        ):
            low, high = before.health_min, before.health_max
            state[viewer_id] = after = Track(
                viewer.raw,
                polled_at,
                0,
                before.dropped,
                0,
                before.anchor_score,
                before.anchor_grade,
                score,
                viewer.health_grade,
                0,
                before.connected_at,
                before.polls + 1,
                score if low is None or score < low else low,
                score if high is None or score > high else high,
                before.health_sum + score,
                before.measured_polls + 1,
                before.drops,
                before.dropped_at,
                before.degraded_ms,
                before.complete,
            )
            if before.missed or before.unlisted or before.last_score is None:
                upserts[viewer_id] = after  # all else it persists is as it was
            continue
        if before is None:
            emissions.append(Connected(viewer_id, viewer.raw, initial))
            base = _seen(
                Track(record=viewer.raw, seen_at=polled_at, connected_at=polled_at), viewer
            )
        else:
            base = _seen(
                replace(before, record=viewer.raw, seen_at=polled_at, missed=0, unlisted=0), viewer
            )
        after = _observe_health(base, viewer, health, emissions, polled_at)
        state[viewer_id] = after
        if before is None or before.persisted_part() != after.persisted_part():
            upserts[viewer_id] = after
    limit = settings.disconnect_after_missed_polls
    for viewer_id, before in tracked.items():
        if viewer_id in seen:
            continue
        found = confirmed.get(viewer_id) if confirmed else None
        if found is not None and before.unlisted < UNLISTED_LIMIT:
            # Seen; its record stays the list's (a lookup may answer in another shape).
            base = _seen(
                replace(before, seen_at=polled_at, missed=0, unlisted=before.unlisted + 1), found
            )
            state[viewer_id] = upserts[viewer_id] = _observe_health(
                base, found, health, emissions, polled_at
            )
            continue
        if not count_misses:
            state[viewer_id] = before
            continue
        missed = before.missed + 1
        if missed >= limit:
            emissions.append(
                Disconnected(viewer_id, before.record, before.seen_at, before.session())
            )
            deletes.append(viewer_id)
        else:
            after = msgspec.structs.replace(before, missed=missed)
            state[viewer_id] = upserts[viewer_id] = after
    return Detection(state=state, upserts=upserts, deletes=deletes, emissions=emissions)


def _seen(track: Track, viewer: Viewer) -> Track:
    """``track`` counting one more poll that saw the viewer (and its measurement, if any)."""
    score = viewer.health
    if score is None:
        return msgspec.structs.replace(track, polls=track.polls + 1)
    low, high = track.health_min, track.health_max
    return msgspec.structs.replace(
        track,
        polls=track.polls + 1,
        health_min=score if low is None or score < low else low,
        health_max=score if high is None or score > high else high,
        health_sum=track.health_sum + score,
        measured_polls=track.measured_polls + 1,
    )


def _observe_health(
    track: Track,
    viewer: Viewer,
    health: HealthSettings,
    emissions: list[Emission],
    polled_at: int,
) -> Track:
    score = viewer.health
    if score is None:  # no measurement: neither counts nor resets
        return track
    grade = viewer.health_grade
    if track.dropped:
        heading = score >= health.recover_at
        event: HealthChange = "viewer.health_recovered"
        threshold = health.recover_at
    else:
        heading = score < health.drop_below
        event = "viewer.health_dropped"
        threshold = health.drop_below
    if not heading:
        return msgspec.structs.replace(
            track,
            streak=0,
            anchor_score=None,
            anchor_grade=None,
            last_score=score,
            last_grade=grade,
        )
    if track.streak == 0:
        anchor_score, anchor_grade = track.last_score, track.last_grade
    else:
        anchor_score, anchor_grade = track.anchor_score, track.anchor_grade
    streak = track.streak + 1
    if streak < health.consecutive_polls:
        return msgspec.structs.replace(
            track,
            streak=streak,
            anchor_score=anchor_score,
            anchor_grade=anchor_grade,
            last_score=score,
            last_grade=grade,
        )
    emissions.append(
        HealthChanged(event, viewer.id, viewer.raw, anchor_score, anchor_grade, threshold)
    )
    if track.dropped:  # recovered: the drop's time is counted
        drops, dropped_at = track.drops, None
        degraded_ms = track.degraded_ms + max(0, polled_at - (track.dropped_at or polled_at))
    else:
        drops, dropped_at, degraded_ms = track.drops + 1, polled_at, track.degraded_ms
    return msgspec.structs.replace(
        track,
        dropped=not track.dropped,
        streak=0,
        anchor_score=None,
        anchor_grade=None,
        last_score=score,
        last_grade=grade,
        drops=drops,
        dropped_at=dropped_at,
        degraded_ms=degraded_ms,
    )
