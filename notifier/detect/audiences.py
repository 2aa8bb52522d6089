"""The stream side of one cluster's polls: who is in which audience, and the stream states.

``streams`` holds the rules; this module keeps what they work on between polls. Each tracked
viewer's ``Member`` (its stream, harness type, country and device, read from its record, with
its measured and dropped flags) is worked out when the viewer is written to Redis (it joins,
its health or misses change, or its record is refreshed: at least every ``record_refresh``), so
the work per poll grows with the changes, not with the audience. After every load the counts
are taken from the tracked viewers themselves (``streams.reconcile``).

Nothing changes here until the poll's commit succeeded (``settle``); after any doubt the
poller loads again and ``load`` starts over.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from notifier.detect.store import KeepStreams
from notifier.detect.streams import apply_streams, member, reconcile

if TYPE_CHECKING:
    from collections.abc import Mapping

    from notifier.detect.rules import Detection, Track
    from notifier.detect.settings import AudienceSettings
    from notifier.detect.streams import Change, Member, StreamId, StreamState
    from notifier.events import StreamEmission

__all__ = ["Audiences", "StreamCommit", "member_of"]


class _Fields(msgspec.Struct, gc=False):
    """The fields of a viewer record that place it in an audience, whatever their types."""

    applicationId: Any = None  # noqa: N815 - the API's spelling
    streamKey: Any = None  # noqa: N815
    harnessType: Any = None  # noqa: N815
    countryCode: Any = None  # noqa: N815
    deviceType: Any = None  # noqa: N815


_fields = msgspec.json.Decoder(_Fields).decode


def member_of(track: Track, settings: AudienceSettings) -> Member | None:
    """The tracked viewer's part in an audience; None if in none (or its record is unreadable:
    the viewer rules took it, so it counts as a viewer of no stream)."""
    return _placed(track, settings)[0]


def _placed(track: Track, settings: AudienceSettings) -> tuple[Member | None, bool]:
    """``member_of``, and whether the viewer is of an audience type yet lacks a stream (no
    usable ``applicationId`` or ``streamKey``): such a viewer counts in no audience."""
    try:
        fields = _fields(track.record)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None, True
    one = member(
        application_id=fields.applicationId,
        stream_key=fields.streamKey,
        harness_type=fields.harnessType,
        country_code=fields.countryCode,
        device_type=fields.deviceType,
        measured=track.measured_polls > 0 or track.last_score is not None,
        dropped=track.dropped,
        settings=settings,
    )
    lacking = one is None and fields.harnessType in settings.harness_types
    return one, lacking


def _flags(one: Member, track: Track) -> Member:
    """``one`` with the measured and dropped flags of ``track``."""
    measured = track.measured_polls > 0 or track.last_score is not None or track.dropped
    if one.measured == measured and one.dropped == track.dropped:
        return one
    return msgspec.structs.replace(one, measured=measured, dropped=track.dropped)


@dataclass(frozen=True, slots=True)
class StreamCommit:
    """The stream side of one poll, ready to commit with it."""

    emissions: list[StreamEmission]  # after the poll's viewer events
    writes: dict[StreamId, StreamState | None]  # None: delete (the audience ended)
    members: dict[str, Member | None]  # the viewers whose part changed, after the poll


class Audiences:
    """Members and stream states of one cluster, between polls (module doc)."""

    def __init__(self, settings: AudienceSettings) -> None:
        self._settings = settings
        self._members: dict[str, Member] = {}
        self._states: dict[StreamId, StreamState] = {}
        self._unwritten: dict[StreamId, StreamState] = {}  # reconciled, not in Redis yet
        self._recheck: set[StreamId] = set()
        self._lost: dict[str, Member] = {}  # viewers of audiences whose start was lost
        self._kept = False
        self.unplaced = 0  # viewers of an audience type without a stream, seen so far

    @property
    def states(self) -> Mapping[StreamId, StreamState]:
        """The live audiences, as of the last poll committed (or the load)."""
        return self._states

    @property
    def keep(self) -> KeepStreams:
        """How the next commit keeps the stream states (``store.KeepStreams``)."""
        return KeepStreams.KEPT if self._kept else KeepStreams.LAST

    def load(
        self,
        tracked: Mapping[str, Track],
        stored: Mapping[StreamId, StreamState],
        *,
        kept: bool,
        now: int,
    ) -> None:
        """Start from a loaded state: members from the tracked viewers, counts reconciled.

        ``kept``: the cluster's stream states were kept (``Snapshot.audiences``). Then an
        audience with no state is one whose start was lost with the last chunk of a poll: its
        viewers join it at the next poll, which starts it. Otherwise stream events were off
        (or the state is new): the audiences are taken as they are, with no events.
        """
        settings = self._settings
        members, lost = {}, {}
        for viewer_id, track in tracked.items():
            one, lacking = _placed(track, settings)
            self.unplaced += lacking
            if one is None:
                continue
            if kept and one.stream not in stored:
                lost[viewer_id] = one
            else:
                members[viewer_id] = one
        states, dirty = reconcile(stored, members.values(), polled_at=now, settings=settings)
        self._members, self._states, self._lost, self._kept = members, states, lost, kept
        self._unwritten = {s: state for s, state in states.items() if stored.get(s) != state}
        self._recheck = dirty

    def decide(
        self,
        tracked: Mapping[str, Track],
        detection: Detection,
        *,
        polled_at: int,
        initial: bool,
    ) -> StreamCommit:
        """The stream events and writes of one poll (nothing here changes until ``settle``);
        ``tracked``: the state the poll was computed from."""
        settings = self._settings
        changes: list[Change] = []
        after: dict[str, Member | None] = {}
        lost = dict(self._lost)
        for viewer_id, track in detection.upserts.items():
            lost.pop(viewer_id, None)  # counted from scratch below: it was in no audience
            before = self._members.get(viewer_id)
            earlier = tracked.get(viewer_id)
            now: Member | None
            if before is not None and earlier is not None and earlier.record == track.record:
                now = _flags(before, track)  # the same record (a miss, say): only the flags
            else:
                now, lacking = _placed(track, settings)
                self.unplaced += lacking and before is None
            if now != before:
                changes.append((before, now))
                after[viewer_id] = now
        for viewer_id in detection.deletes:
            lost.pop(viewer_id, None)
            before = self._members.get(viewer_id)
            if before is not None:
                changes.append((before, None))
                after[viewer_id] = None
        for viewer_id, one in lost.items():
            changes.append((None, one))
            after[viewer_id] = one
        decided = apply_streams(
            self._states,
            changes,
            polled_at=polled_at,
            settings=settings,
            initial=initial,
            recheck=self._recheck,
        )
        writes: dict[StreamId, StreamState | None] = {**self._unwritten, **decided.changed}
        return StreamCommit(emissions=decided.emissions, writes=writes, members=after)

    def settle(self, committed: StreamCommit) -> None:
        """The poll was committed: take its members and states as the truth."""
        for viewer_id, one in committed.members.items():
            if one is None:
                self._members.pop(viewer_id, None)
            else:
                self._members[viewer_id] = one
        for stream, state in committed.writes.items():
            if state is None:
                self._states.pop(stream, None)
            else:
                self._states[stream] = state
        self._unwritten, self._recheck, self._lost, self._kept = {}, set(), {}, True
