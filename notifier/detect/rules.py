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

The state after a poll is a ``Tracked``: a steady viewer (seen poll after poll with the same
measurement, heading for no transition) keeps one ``Track`` across those polls, its counts
taken lazily from the poll's number, instead of a new one per poll; this loop runs once per
viewer per poll.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from notifier.events import Connected, Disconnected, HealthChanged, Session

if TYPE_CHECKING:
    from collections.abc import Iterator, KeysView

    from notifier.detect.settings import DetectionSettings, HealthSettings
    from notifier.events import Emission, HealthChange
    from notifier.storm import Viewer

__all__ = ["UNLISTED_LIMIT", "Detection", "Track", "Tracked", "detect"]

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
    # In memory only (``Tracked``): >= 0, the number of the poll from which on every poll saw
    # the viewer, measured at last_score and last_grade (``run_measured``) or with no
    # measurement; the record, seen_at and counts leave those polls out. -1: the Track is whole.
    run: int = -1
    run_measured: bool = True

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


def _run(track: Track, number: int, *, measured: bool) -> Track:
    """A whole ``track`` as the start of a run at poll ``number`` (``Track.run``)."""
    return msgspec.structs.replace(track, record=b"", run=number, run_measured=measured)


_EXACT_SCALE = 2.0**10
_EXACT_SCORE = 1000.0  # at most, in absolute value
_EXACT_SUM = 2.0**40  # at most: 2**43 - 2**40 leaves billions of polls of runs before 2**43


def _exact(score: float, health_sum: float) -> bool:
    """Whether a measured run may start at ``score`` after ``health_sum``: both multiples of
    2**-10 (any integer score, 87.5, 93.25), the score not zero, neither large.

    Adding such a score poll after poll to such a sum is exact (every partial sum is a
    multiple of 2**-10 below 2**43, for runs of up to 7.7 billion polls), so ``_whole``'s
    ``sum + score * polls`` is the very float that adding it once per poll gives. Any other
    score (84.64) is added once per poll, as ever, and so is every score of a session whose sum
    took one: integer scores (as Storm sends them) keep the lazy path. Zero is left out because
    ``-0.0 == 0.0``: a run would keep the first one's sign.
    """
    scale = _EXACT_SCALE
    return (
        (score * scale).is_integer()
        and (health_sum * scale).is_integer()
        and 0 < abs(score) <= _EXACT_SCORE
        and abs(health_sum) <= _EXACT_SUM
    )


def _whole(track: Track, record: bytes, number: int, polled_at: int) -> Track:
    """``track`` of a run (``Track.run``) with the run's polls counted, as of poll ``number``
    (at ``polled_at``), which saw ``record``."""
    polls = number - track.run + 1
    score = track.last_score
    if not track.run_measured:
        return msgspec.structs.replace(
            track,
            record=record,
            seen_at=polled_at,
            polls=track.polls + polls,
            run=-1,
            run_measured=True,
        )
    if score is None:  # (a measured run has a score: never here)
        raise ValueError("a measured run without a measurement")
    low, high = track.health_min, track.health_max
    return msgspec.structs.replace(
        track,
        record=record,
        seen_at=polled_at,
        polls=track.polls + polls,
        health_min=score if low is None or score < low else low,
        health_max=score if high is None or score > high else high,
        health_sum=track.health_sum + score * polls,
        measured_polls=track.measured_polls + polls,
        run=-1,
    )


class Tracked(Mapping[str, Track]):
    """The viewers tracked after one poll (``number``, at ``polled_at``, which saw ``seen``).

    Reading a viewer gives its whole ``Track``. Inside, a steady viewer's Track is one of a run
    (``Track.run``), made whole on reading: with the poll's record and the run's polls counted.
    """

    __slots__ = ("_seen", "_tracks", "number", "polled_at")

    def __init__(
        self, tracks: dict[str, Track], seen: Mapping[str, Viewer], *, number: int, polled_at: int
    ) -> None:
        self._tracks = tracks
        self._seen = seen
        self.number = number
        self.polled_at = polled_at

    @classmethod
    def of(cls, tracks: Mapping[str, Track]) -> Tracked:
        """Whole tracks (as ``load`` reads them, or a test writes them) as a state."""
        if isinstance(tracks, Tracked):
            return tracks
        if any(track.run >= 0 for track in tracks.values()):
            raise ValueError("a Track of a run outside its Tracked")
        return cls(dict(tracks), {}, number=0, polled_at=0)

    def release_bodies(self, runs: int) -> None:
        """After ``detect``: let the poll's page bodies go (its listed records are views of
        them) unless most Tracks, ``runs`` of them, are of a run and need them. With none, no
        record of the poll is needed; with few, those of the runs are copied (the other Tracks
        hold copies already), so no record is held twice."""
        if not runs:
            self._seen = {}
        elif runs * 2 < len(self._seen):
            tracks, replace = self._tracks, msgspec.structs.replace
            self._seen = {
                viewer_id: replace(viewer, raw=viewer.record_bytes())
                for viewer_id, viewer in self._seen.items()
                if tracks[viewer_id].run >= 0
            }

    @property
    def tracks(self) -> Mapping[str, Track]:
        """The Tracks as kept (those of a run not whole): for ``detect``."""
        return self._tracks

    def whole(self, viewer_id: str, track: Track) -> Track:
        """``track`` (this state's, of ``viewer_id``) made whole."""
        if track.run < 0:
            return track
        return _whole(track, self._seen[viewer_id].record_bytes(), self.number, self.polled_at)

    def __getitem__(self, viewer_id: str) -> Track:
        return self.whole(viewer_id, self._tracks[viewer_id])

    def get(self, viewer_id: str, default: Track | None = None) -> Track | None:  # type: ignore[override]
        track = self._tracks.get(viewer_id)
        return default if track is None else self.whole(viewer_id, track)

    def __contains__(self, viewer_id: object) -> bool:
        return viewer_id in self._tracks

    def __iter__(self) -> Iterator[str]:
        return iter(self._tracks)

    def __len__(self) -> int:
        return len(self._tracks)

    def keys(self) -> KeysView[str]:
        """The viewer ids (a dict's view: set operations run in C)."""
        return self._tracks.keys()

    def __repr__(self) -> str:
        return f"Tracked({len(self._tracks)} viewers, poll {self.number})"


_NONE = Tracked({}, {}, number=0, polled_at=0)


@dataclass(frozen=True, slots=True)
class Detection:
    """The result of one complete poll."""

    state: Tracked  # every viewer tracked after this poll
    upserts: dict[str, Track]  # entries Redis must write (whole)
    deletes: list[str]  # entries Redis must remove
    emissions: list[Emission]  # in emission order

    def changes(self) -> Detection:
        """The writes alone, without the whole state after the poll (what a poll waiting to
        be written keeps: ``backlog``)."""
        return Detection(_NONE, self.upserts, self.deletes, self.emissions)


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
    earlier = Tracked.of(tracked)
    number = earlier.number + 1
    state: dict[str, Track] = {}
    upserts: dict[str, Track] = {}
    deletes: list[str] = []
    emissions: list[Emission] = []
    after = Tracked(state, seen, number=number, polled_at=polled_at)
    detection = Detection(after, upserts, deletes, emissions)
    joined, runs = _listed(earlier, seen, state, detection, settings=settings, initial=initial)
    after.release_bodies(runs)
    if len(seen) - joined < len(earlier):  # some tracked viewers were not listed
        _absent(
            earlier,
            seen,
            state,
            detection,
            polled_at=polled_at,
            settings=settings,
            confirmed=confirmed,
            count_misses=count_misses,
        )
    return detection


def _listed(
    earlier: Tracked,
    seen: Mapping[str, Viewer],
    state: dict[str, Track],
    out: Detection,
    *,
    settings: DetectionSettings,
    initial: bool,
) -> tuple[int, int]:
    """``detect`` of the viewers the list returned, into ``state`` (the dict ``out.state``
    holds) and ``out``'s writes; returns how many joined, and how many Tracks are of a run."""
    upserts, emissions = out.upserts, out.emissions
    number, polled_at = out.state.number, out.state.polled_at
    health = settings.health
    drop_below, recover_at = health.drop_below, health.recover_at
    replace = msgspec.structs.replace
    get, whole = earlier.tracks.get, earlier.whole
    joined = runs = 0
    for viewer_id, viewer in seen.items():
        before = get(viewer_id)
        if before is None:
            joined += 1
            record = viewer.record_bytes()
            emissions.append(Connected(viewer_id, record, initial))
            score = viewer.health
            if score is not None and score >= drop_below:  # the usual join, inline (a big event)
                after = _joined(record, viewer, score, polled_at)
            else:
                base = _seen(
                    Track(record=record, seen_at=polled_at, connected_at=polled_at), viewer
                )
                after = _observe_health(base, viewer, health, emissions, polled_at)
            state[viewer_id] = upserts[viewer_id] = after
            continue
        # The common cases inline, without an intermediate copy (what _observe_health would
        # do). Steady (measured as in the poll before, or not at all, no streak, heading for no
        # transition): the same Track, its run counted lazily (``Tracked``).
        score = viewer.health
        if before.run >= 0:
            if (
                score == before.last_score and viewer.health_grade == before.last_grade
                if before.run_measured
                else score is None
            ):
                state[viewer_id] = before  # the run goes on: the poll costs no more than this
                runs += 1
                continue
            before = whole(viewer_id, before)
        if score is None:
            if not (before.missed or before.unlisted):
                state[viewer_id] = _run(before, number, measured=False)
                runs += 1
                continue
        elif not before.streak and (score < recover_at if before.dropped else score >= drop_below):
            if (
                score == before.last_score
                and viewer.health_grade == before.last_grade
                and not (before.missed or before.unlisted)
                and _exact(score, before.health_sum)
            ):
                state[viewer_id] = _run(before, number, measured=True)
                runs += 1
                continue
            state[viewer_id] = after = _measured(before, viewer, score, polled_at)
            if before.missed or before.unlisted or before.last_score is None:
                upserts[viewer_id] = after  # all else it persists is as it was
            continue
        base = _seen(
            replace(before, record=viewer.record_bytes(), seen_at=polled_at, missed=0, unlisted=0),
            viewer,
        )
        state[viewer_id] = after = _observe_health(base, viewer, health, emissions, polled_at)
        if before.persisted_part() != after.persisted_part():
            upserts[viewer_id] = after
    return joined, runs


def _absent(
    earlier: Tracked,
    seen: Mapping[str, Viewer],
    state: dict[str, Track],
    out: Detection,
    *,
    polled_at: int,
    settings: DetectionSettings,
    confirmed: Mapping[str, Viewer] | None,
    count_misses: bool,
) -> None:
    """``detect`` of the tracked viewers the list left out (confirmed, missed or gone), into
    ``state`` (the dict ``out.state`` holds) and ``out``'s writes."""
    upserts, emissions = out.upserts, out.emissions
    health = settings.health
    limit = settings.disconnect_after_missed_polls
    replace = msgspec.structs.replace
    for viewer_id, kept in earlier.tracks.items():
        if viewer_id in seen:
            continue
        before = earlier.whole(viewer_id, kept)
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
            out.deletes.append(viewer_id)
        else:
            state[viewer_id] = upserts[viewer_id] = replace(before, missed=missed)


def _joined(record: bytes, viewer: Viewer, score: float, polled_at: int) -> Track:
    """A viewer first seen at ``polled_at``, measured at ``score``, heading for no drop."""
    return Track(
        record=record,
        seen_at=polled_at,
        last_score=score,
        last_grade=viewer.health_grade,
        connected_at=polled_at,
        polls=1,
        health_min=score,
        health_max=score,
        health_sum=0.0 + score,  # (a sum from 0.0: -0.0 is 0.0 here)
        measured_polls=1,
    )


def _measured(before: Track, viewer: Viewer, score: float, polled_at: int) -> Track:
    """``before`` seen and measured at ``score``, no streak, heading for no transition."""
    low, high = before.health_min, before.health_max
    return Track(
        viewer.record_bytes(),
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
        HealthChanged(
            event, viewer.id, viewer.record_bytes(), anchor_score, anchor_grade, threshold
        )
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
