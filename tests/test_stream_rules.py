"""The pure stream (audience) rules: examples, and properties against an independent oracle."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notifier.detect.settings import AudienceSettings
from notifier.detect.streams import (
    Change,
    Member,
    StreamDetection,
    StreamId,
    StreamState,
    adopt,
    apply_streams,
    member,
)
from notifier.events import (
    AudienceCrossed,
    AudienceEnded,
    AudienceStarted,
    BreakdownRow,
    StreamDegraded,
    StreamEmission,
    StreamRecovered,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

E = TypeVar("E")

SETTINGS = AudienceSettings()  # thresholds 100/1000/10000, hysteresis 0.1, 0.2 / 3 / 0.1
LIVE = StreamId("app", "live")
OTHER = StreamId("app", "other")


def config(**values: Any) -> AudienceSettings:
    return AudienceSettings.model_validate(values)


def viewer(
    stream: StreamId = LIVE,
    *,
    country: str | None = "PL",
    device: str | None = "DESKTOP",
    harness: str = "STORM_MSE_VIEWER",
    measured: bool = True,
    dropped: bool = False,
) -> Member:
    return Member(stream, harness, country, device, measured or dropped, dropped)


class Stepper:
    """Applies polls one after the other, keeping the states as a store would (only ``changed``)."""

    def __init__(self, settings: AudienceSettings = SETTINGS) -> None:
        self.settings = settings
        self.states: dict[StreamId, StreamState] = {}
        self.at = 0

    def poll(self, *changes: Change, initial: bool = False, at: int | None = None) -> list[str]:
        """The poll's event types; the last detection is kept in ``self.last``."""
        self.at = self.at + 1000 if at is None else at
        self.last = apply_streams(
            self.states, changes, polled_at=self.at, settings=self.settings, initial=initial
        )
        commit(self.states, self.last)
        return [e.type.removeprefix("stream.") for e in self.last.emissions]


def commit(states: dict[StreamId, StreamState], detection: StreamDetection) -> None:
    for stream, state in detection.changed.items():
        if state is None:
            del states[stream]
        else:
            states[stream] = state


def of(kind: type[E], emissions: Iterable[StreamEmission]) -> list[E]:
    """The emissions of one class, in order."""
    return [e for e in emissions if isinstance(e, kind)]


def joins(*members: Member) -> list[Change]:
    return [(None, m) for m in members]


def leaves(*members: Member) -> list[Change]:
    return [(m, None) for m in members]


# --- examples, one per event type and per tricky rule ------------------------------------------


def test_the_first_viewer_starts_the_audience_and_the_last_ends_it_with_a_summary() -> None:
    """started carries the viewers; ended carries start, duration, peak, sessions, no incident."""
    step = Stepper()
    first, second, third = viewer(), viewer(country="DE"), viewer(device="MOBILE")
    assert step.poll(*joins(first, second), at=1000) == ["audience_started"]
    assert step.last.emissions == [AudienceStarted("app", "live", 2, initial=False)]
    assert step.poll(*leaves(first), *joins(third), at=2000) == []
    assert step.poll(*joins(first), at=3000) == []
    assert step.poll(*leaves(first, second, third), at=7500) == ["audience_ended"]
    (ended,) = step.last.emissions
    assert isinstance(ended, AudienceEnded)
    assert (ended.application_id, ended.stream_key) == LIVE
    summary = ended.summary
    assert (summary.started_at, summary.duration_ms) == (1000, 6500)
    assert (summary.peak_viewers, summary.peak_at) == (3, 3000)
    assert summary.sessions == 4  # first joined twice
    assert (summary.degraded_ms, summary.ended_degraded) == (0, False)
    assert step.last.changed == {LIVE: None}
    assert step.states == {}


def test_several_thresholds_crossed_in_one_poll_are_one_event_each_in_order() -> None:
    """Up-crossings come ascending after started; down-crossings descending, before ended."""
    step = Stepper(config(audience_thresholds=[2, 4, 6]))
    crowd = [viewer(country=str(i)) for i in range(7)]
    kinds = step.poll(*joins(*crowd), initial=True)
    assert kinds == ["audience_started", *["audience_crossed"] * 3]
    ups = of(AudienceCrossed, step.last.emissions)
    assert [(e.threshold, e.direction, e.viewers, e.peak_viewers, e.initial) for e in ups] == [
        (2, "up", 7, 7, True),
        (4, "up", 7, 7, True),
        (6, "up", 7, 7, True),
    ]
    assert step.poll(*leaves(*crowd)) == [*["audience_crossed"] * 3, "audience_ended"]
    downs = of(AudienceCrossed, step.last.emissions)
    assert [(e.threshold, e.direction, e.viewers, e.initial) for e in downs] == [
        (6, "down", 0, False),
        (4, "down", 0, False),
        (2, "down", 0, False),
    ]


def test_a_down_crossing_needs_the_audience_below_the_hysteresis_band() -> None:
    """At 10 with 10% hysteresis: 9 holds, 8 crosses down, 9 holds, 10 crosses up again."""
    step = Stepper(config(audience_thresholds=[10]))
    crowd = [viewer(country=str(i)) for i in range(10)]
    assert step.poll(*joins(*crowd[:9])) == ["audience_started"]
    assert step.poll(*joins(crowd[9])) == ["audience_crossed"]
    assert step.poll(*leaves(crowd[9])) == []  # 9 is not below 10 * 0.9
    assert step.poll(*leaves(crowd[8])) == ["audience_crossed"]
    down = step.last.emissions[0]
    assert isinstance(down, AudienceCrossed)
    assert (down.direction, down.viewers, down.peak_viewers) == ("down", 8, 10)
    assert step.poll(*joins(crowd[8])) == []
    assert step.poll(*joins(crowd[9])) == ["audience_crossed"]
    (up,) = of(AudienceCrossed, step.last.emissions)
    assert (up.direction, up.initial) == ("up", False)


def test_degradation_needs_share_and_minimum_and_recovery_has_hysteresis() -> None:
    """2 of 10 dropped: nothing; 3: degraded; a share in 0.1..0.2 holds; 2 dropped recovers."""
    step = Stepper()
    healthy = [viewer(country=f"c{i}") for i in range(30)]
    step.poll(*joins(*healthy[:10]), at=1000)
    drops = [(healthy[i], dataclasses_replace(healthy[i], dropped=True)) for i in range(4)]
    assert step.poll(*drops[:2], at=2000) == []  # share 0.2, but only 2 dropped
    assert step.poll(drops[2], at=3000) == ["health_degraded"]
    degraded = step.last.emissions[0]
    assert isinstance(degraded, StreamDegraded)
    assert (degraded.viewers, degraded.measured, degraded.dropped) == (10, 10, 3)
    assert degraded.share == pytest.approx(0.3)
    assert step.poll(*joins(*healthy[10:20]), drops[3], at=4000) == []  # 4/20 = 0.2: holds
    assert step.poll(*joins(*healthy[20:30]), at=5000) == []  # 4/30: still >= 0.1
    back = [(after, before) for before, after in drops[:2]]
    assert step.poll(*back, at=9000) == ["health_recovered"]  # 2 dropped < 3
    recovered = step.last.emissions[0]
    assert isinstance(recovered, StreamRecovered)
    assert (recovered.viewers, recovered.measured, recovered.dropped) == (30, 30, 2)
    incident = recovered.incident
    assert (incident.since, incident.duration_ms, incident.peak_dropped) == (3000, 6000, 4)
    assert incident.peak_share == pytest.approx(0.3)
    assert step.states[LIVE].degraded_ms == 6000


def test_a_share_exactly_at_a_threshold_degrades_at_degraded_and_holds_at_recovered() -> None:
    """share == degraded_share degrades; share == recovered_share is not below it: it holds."""
    step = Stepper(config(degraded_share=0.5, recovered_share=0.25, degraded_min_viewers=1))
    healthy = [viewer(country=str(i)) for i in range(4)]
    kinds = step.poll(*joins(viewer(dropped=True), healthy[0]))
    assert kinds == ["audience_started", "health_degraded"]  # 1 of 2
    assert step.poll(*joins(*healthy[1:3])) == []  # 1 of 4: holds
    assert step.poll(*joins(healthy[3])) == ["health_recovered"]  # 1 of 5


def test_the_breakdown_lists_the_most_dropped_first_in_a_fixed_order() -> None:
    """Up to 5 rows per attribute: most dropped, then most viewers, then by value, None last."""
    audience = [
        *[viewer(country="PL", dropped=True) for _ in range(3)],
        *[viewer(country="DE", dropped=True, device="MOBILE") for _ in range(3)],
        viewer(country="DE"),
        viewer(country="FR", dropped=True),
        viewer(country=None, dropped=True, device=None),
        viewer(country="AT", dropped=True, harness="RTMP_VIEWER"),
        viewer(country="US"),
        viewer(country="ES"),
    ]
    step = Stepper(config(degraded_share=0.5))
    assert step.poll(*joins(*audience)) == ["audience_started", "health_degraded"]
    (degraded,) = of(StreamDegraded, step.last.emissions)
    breakdown = degraded.breakdown
    assert breakdown.country_code == (
        BreakdownRow("DE", 4, 3),
        BreakdownRow("PL", 3, 3),
        BreakdownRow("AT", 1, 1),
        BreakdownRow("FR", 1, 1),
        BreakdownRow(None, 1, 1),
    )
    assert breakdown.harness_type == (
        BreakdownRow("STORM_MSE_VIEWER", 11, 8),
        BreakdownRow("RTMP_VIEWER", 1, 1),
    )
    assert breakdown.device_type == (
        BreakdownRow("DESKTOP", 8, 5),
        BreakdownRow("MOBILE", 3, 3),
        BreakdownRow(None, 1, 1),
    )


def test_an_audience_that_ends_while_degraded_ends_the_incident_without_a_recovery() -> None:
    """Degraded, then everyone leaves: audience_ended with endedDegraded, no health_recovered."""
    step = Stepper(config(degraded_min_viewers=1, audience_thresholds=[1]))
    sick = viewer(dropped=True)
    assert step.poll(*joins(sick), at=1000) == [
        "audience_started",
        "audience_crossed",
        "health_degraded",
    ]
    assert step.poll(*leaves(sick), at=4000) == ["audience_crossed", "audience_ended"]
    (ended,) = of(AudienceEnded, step.last.emissions)
    summary = ended.summary
    assert (summary.ended_degraded, summary.degraded_ms, summary.duration_ms) == (True, 3000, 3000)


def test_only_the_first_poll_from_no_state_marks_its_events_initial() -> None:
    """initial: started and up-crossings carry it; later polls' events do not."""
    step = Stepper(config(audience_thresholds=[1, 2]))
    a, b = viewer(), viewer(stream=OTHER)
    step.poll(*joins(a), initial=True)
    emitted = step.last.emissions
    assert [e.initial for e in of(AudienceStarted, emitted) + of(AudienceCrossed, emitted)] == [
        True,
        True,
    ]
    step.poll(*joins(b, viewer(country="DE")))
    emitted = step.last.emissions
    assert [type(e).__name__ for e in emitted] == [
        "AudienceStarted",
        "AudienceCrossed",
        "AudienceCrossed",
    ]
    assert [e.initial for e in of(AudienceStarted, emitted) + of(AudienceCrossed, emitted)] == [
        False,
        False,
        False,
    ]


def test_adopting_existing_audiences_emits_nothing_and_marks_thresholds_reached() -> None:
    """Turned on over 150 viewers: no burst; 100 is reached silently; health waits for a change."""
    crowd = [viewer(country=str(i % 7), dropped=i < 40) for i in range(150)]
    states = adopt(crowd, polled_at=500, settings=SETTINGS)
    (state,) = states.values()
    assert (state.viewers, state.measured, state.dropped, state.sessions) == (150, 150, 40, 150)
    assert (state.started_at, state.peak_viewers, state.peak_at) == (500, 150, 500)
    assert state.reached == (100,)
    assert state.degraded_since is None  # adopted not degraded, whatever its counts
    step = Stepper()
    step.states = dict(states)
    assert step.poll(*joins(viewer())) == ["health_degraded"]  # no up-crossing of 100
    assert step.poll(*leaves(*crowd[40:101])) == []  # 90 left: not below 100 * 0.9
    assert step.poll(*leaves(crowd[101])) == ["audience_crossed"]  # the one reached silently
    assert [e.direction for e in of(AudienceCrossed, step.last.emissions)] == ["down"]


def test_a_single_flapping_viewer_emits_only_what_the_rules_say() -> None:
    """One viewer dropping and recovering, joining and leaving: never degrades below the
    minimum; with a minimum of 1 its stream alternates degraded and recovered, once per flip."""
    calm = Stepper()
    well, ill = viewer(), viewer(dropped=True)
    kinds: list[str] = []
    for _ in range(20):
        kinds += calm.poll((None, well)) + calm.poll((well, ill)) + calm.poll((ill, None))
    assert kinds == ["audience_started", "audience_ended"] * 20
    touchy = Stepper(config(degraded_min_viewers=1))
    touchy.poll((None, well))
    kinds = []
    for _ in range(20):
        kinds += touchy.poll((well, ill)) + touchy.poll((ill, well))
    assert kinds == ["health_degraded", "health_recovered"] * 20


def test_a_stream_of_100k_viewers_keeps_a_small_state_and_one_change_stays_cheap() -> None:
    """Counters, not members: 100k viewers encode to a few kB; a change rewrites one stream."""
    crowd = [
        viewer(country=f"C{i % 200}", device=("MOBILE", "DESKTOP", "TABLET")[i % 3])
        for i in range(100_000)
    ]
    states = adopt(crowd, polled_at=0, settings=SETTINGS)
    first = apply_streams({}, joins(*crowd), polled_at=0, settings=SETTINGS, initial=True)
    assert [e.type for e in first.emissions] == [
        "stream.audience_started",
        *["stream.audience_crossed"] * 3,
    ]
    started = first.changed[LIVE]
    assert started is not None
    assert msgspec.structs.replace(started, reached=states[LIVE].reached) == states[LIVE]
    assert len(msgspec.msgpack.encode(states[LIVE])) < 4096
    states[OTHER] = adopt([viewer(OTHER)], polled_at=0, settings=SETTINGS)[OTHER]
    detection = apply_streams(
        states, [(crowd[5], None)], polled_at=1, settings=SETTINGS, initial=False
    )
    assert list(detection.changed) == [LIVE]  # the other stream is not rewritten
    after = detection.changed[LIVE]
    assert after is not None
    assert after.viewers == states[LIVE].viewers - 1
    assert detection.emissions == []


def test_viewers_without_both_ids_or_of_an_other_harness_type_are_in_no_audience() -> None:
    """No streamKey, no applicationId, non-string or empty ids, publishers, unknown types: None."""
    fields: dict[str, Any] = {
        "application_id": "app",
        "stream_key": "live",
        "harness_type": "STORM_HLS_VIEWER",
        "country_code": "PL",
        "device_type": "MOBILE",
        "measured": False,
        "dropped": False,
        "settings": SETTINGS,
    }
    assert member(**fields) == Member(LIVE, "STORM_HLS_VIEWER", "PL", "MOBILE")
    for key, value in [
        ("stream_key", None),
        ("stream_key", ""),
        ("stream_key", 123),
        ("application_id", None),
        ("application_id", ["app"]),
        ("harness_type", "RTMP_PUSH"),
        ("harness_type", "TRANSCODER"),
        ("harness_type", "SOMETHING_NEW"),
        ("harness_type", None),
    ]:
        assert member(**{**fields, key: value}) is None, (key, value)
    odd = member(**{**fields, "country_code": "", "device_type": 3, "dropped": True})
    assert odd == Member(LIVE, "STORM_HLS_VIEWER", None, None, measured=True, dropped=True)
    only_rtmp = config(harness_types=["RTMP_PUSH"])
    assert member(**{**fields, "harness_type": "RTMP_PUSH", "settings": only_rtmp}) is not None


def test_bad_changes_crash_nothing_and_invent_no_event() -> None:
    """Non-changes are skipped, leaves never counted floor at zero, a clock going back: 0 ms."""
    step = Stepper(config(audience_thresholds=[]))
    assert step.poll((None, None), (viewer(), viewer()), (viewer(), None)) == []
    assert step.last.changed == {}
    assert step.poll(*joins(viewer()), at=5000) == ["audience_started"]
    assert step.poll(*leaves(viewer(), viewer(), viewer(OTHER)), at=4000) == ["audience_ended"]
    assert of(AudienceEnded, step.last.emissions)[0].summary.duration_ms == 0
    assert step.states == {}


def test_a_move_to_another_stream_is_a_leave_and_a_join_in_the_order_of_the_changes() -> None:
    """Streams come in the order they first appear in the changes; per stream, causal order."""
    step = Stepper(config(audience_thresholds=[]))
    here, there = viewer(LIVE), viewer(OTHER)
    third = StreamId("app2", "live")
    step.poll(*joins(here))
    step.poll((here, there), (None, viewer(third)))
    emitted = [(type(e).__name__, e.stream_key, e.application_id) for e in step.last.emissions]
    assert emitted == [
        ("AudienceEnded", "live", "app"),
        ("AudienceStarted", "other", "app"),
        ("AudienceStarted", "live", "app2"),
    ]
    assert of(AudienceEnded, step.last.emissions)[0].summary.sessions == 1


def test_changes_that_leave_the_counts_as_they_were_change_no_state() -> None:
    """Two viewers swapping countries: the stream is touched, its state equal, nothing written."""
    step = Stepper()
    pl, de = viewer(country="PL"), viewer(country="DE")
    step.poll(*joins(pl, de))
    assert step.poll((pl, de), (de, pl)) == []
    assert step.last.changed == {}


def test_states_round_trip_through_msgpack() -> None:
    """What a store writes decodes to the same state (None breakdown values included)."""
    state = StreamState(
        viewers=3,
        measured=2,
        dropped=1,
        countries={"PL": (2, 1), "": (1, 0)},
        harnesses={"RTMP_VIEWER": (3, 1)},
        devices={"": (3, 1)},
        started_at=5,
        peak_viewers=4,
        peak_at=6,
        sessions=7,
        reached=(1, 2),
        degraded_since=9,
        peak_dropped=2,
        peak_share=0.5,
        degraded_ms=10,
    )
    blob = msgspec.msgpack.encode(state)
    assert msgspec.msgpack.decode(blob, type=StreamState) == state


def test_thresholds_removed_from_the_config_are_forgotten_without_an_event() -> None:
    """A reached threshold no longer configured has no down-crossing, and leaves the state."""
    step = Stepper(config(audience_thresholds=[1, 2]))
    step.poll(*joins(viewer(), viewer(country="DE")))
    step.settings = config(audience_thresholds=[1])
    assert step.poll(*leaves(viewer())) == []
    assert step.states[LIVE].reached == (1,)


def dataclasses_replace(one: Member, **changes: Any) -> Member:
    return msgspec.structs.replace(one, **changes)


# --- the oracle ---------------------------------------------------------------------------------

Fields = tuple[Any, Any, Any, Any, Any, bool, bool]  # app, key, harness, country, device, m, d
Place = tuple[tuple[str, str], str, str | None, str | None, bool, bool]


def place_of(fields: Fields, config: AudienceSettings) -> Place | None:
    """SPEC 4.1 read plainly: where a viewer counts, or None."""
    app, key, harness, country, device, measured, dropped = fields
    if not (isinstance(app, str) and app and isinstance(key, str) and key):
        return None
    if harness not in config.harness_types:
        return None
    country = country if isinstance(country, str) and country else None
    device = device if isinstance(device, str) and device else None
    return ((app, key), harness, country, device, measured or dropped, dropped)


@dataclass
class Recount:
    """One stream's audience, counted from scratch."""

    viewers: int = 0
    measured: int = 0
    dropped: int = 0
    by: tuple[dict[str | None, list[int]], ...] = field(default_factory=lambda: ({}, {}, {}))

    def rows(self, dimension: int) -> tuple[dict[str, Any], ...]:
        ranked = sorted(
            self.by[dimension].items(),
            key=lambda kv: (-kv[1][1], -kv[1][0], kv[0] is None, kv[0] or ""),
        )
        return tuple({"value": k, "viewers": v, "dropped": d} for k, (v, d) in ranked[:5])

    def counters(self, dimension: int) -> dict[str, tuple[int, int]]:
        return {(k or ""): (v, d) for k, (v, d) in self.by[dimension].items()}


def recount(places: dict[int, Place]) -> dict[tuple[str, str], Recount]:
    counts: dict[tuple[str, str], Recount] = {}
    for stream, harness, country, device, measured, dropped in places.values():
        count = counts.setdefault(stream, Recount())
        count.viewers += 1
        count.measured += measured
        count.dropped += dropped
        for dimension, value in enumerate((country, harness, device)):
            cell = count.by[dimension].setdefault(value, [0, 0])
            cell[0] += 1
            cell[1] += dropped
    return counts


class Oracle:
    """A plain model of SPEC 4.1 that recounts every audience from all the viewers each poll."""

    def __init__(self, config: AudienceSettings) -> None:
        self.config = config
        self.live: dict[tuple[str, str], dict[str, Any]] = {}

    def adopt(self, places: dict[int, Place], at: int) -> None:
        for stream, count in recount(places).items():
            reached = {t for t in self.config.audience_thresholds if count.viewers >= t}
            self.live[stream] = self._new(at, count.viewers, reached)

    @staticmethod
    def _new(at: int, viewers: int, reached: set[int]) -> dict[str, Any]:
        return {
            "started_at": at,
            "peak": viewers,
            "peak_at": at,
            "sessions": viewers,
            "reached": reached,
            "since": None,
            "peak_dropped": 0,
            "peak_share": 0.0,
            "degraded_ms": 0,
        }

    def step(
        self, before: dict[int, Place], after: dict[int, Place], at: int, initial: bool
    ) -> dict[tuple[str, str], list[tuple[str, dict[str, Any]]]]:
        touched = {
            place[0]
            for vid in before.keys() | after.keys()
            if before.get(vid) != after.get(vid)
            for place in (before.get(vid), after.get(vid))
            if place is not None
        }
        counts = recount(after)
        out: dict[tuple[str, str], list[tuple[str, dict[str, Any]]]] = {}
        for stream in touched:
            count = counts.get(stream, Recount())
            joined = sum(
                1
                for vid, place in after.items()
                if place[0] == stream and (before.get(vid) is None or before[vid][0] != stream)
            )
            out[stream] = self._stream(stream, count, joined, at, initial)
        return out

    def _stream(
        self, stream: tuple[str, str], count: Recount, joined: int, at: int, initial: bool
    ) -> list[tuple[str, dict[str, Any]]]:
        cfg = self.config
        events: list[tuple[str, dict[str, Any]]] = []
        s = self.live.get(stream)
        n = count.viewers
        if s is None and n == 0:
            return []
        if s is None:
            events.append(("stream.audience_started", {"viewers": n, "initial": initial}))
            s = self.live[stream] = self._new(at, 0, set())
            s["sessions"] = 0
        s["sessions"] += joined
        if n == 0:
            events += [
                ("stream.audience_crossed", self._cross(t, "down", 0, s, initial=False))
                for t in sorted(s["reached"], reverse=True)
            ]
            open_ms = at - s["since"] if s["since"] is not None else 0
            summary = {
                "started_at": s["started_at"],
                "duration_ms": at - s["started_at"],
                "peak_viewers": s["peak"],
                "peak_at": s["peak_at"],
                "sessions": s["sessions"],
                "degraded_ms": s["degraded_ms"] + open_ms,
                "ended_degraded": s["since"] is not None,
            }
            events.append(("stream.audience_ended", {"summary": summary}))
            del self.live[stream]
            return events
        if n > s["peak"]:
            s["peak"], s["peak_at"] = n, at
        for t in sorted(cfg.audience_thresholds, reverse=True):
            if t in s["reached"] and n < t * (1 - cfg.audience_hysteresis):
                s["reached"].discard(t)
                down = self._cross(t, "down", n, s, initial=False)
                events.append(("stream.audience_crossed", down))
        for t in sorted(cfg.audience_thresholds):
            if t not in s["reached"] and n >= t:
                s["reached"].add(t)
                up = self._cross(t, "up", n, s, initial=initial)
                events.append(("stream.audience_crossed", up))
        share = count.dropped / count.measured if count.measured else 0.0
        figures: dict[str, Any] = {
            "viewers": n,
            "measured": count.measured,
            "dropped": count.dropped,
            "share": share,
            "breakdown": {
                "country_code": count.rows(0),
                "harness_type": count.rows(1),
                "device_type": count.rows(2),
            },
        }
        bad = share >= cfg.degraded_share and count.dropped >= cfg.degraded_min_viewers
        good = share < cfg.recovered_share or count.dropped < cfg.degraded_min_viewers
        if s["since"] is None and bad:
            s["since"], s["peak_dropped"], s["peak_share"] = at, count.dropped, share
            events.append(("stream.health_degraded", figures))
        elif s["since"] is not None and good:
            incident = {
                "since": s["since"],
                "duration_ms": at - s["since"],
                "peak_dropped": s["peak_dropped"],
                "peak_share": s["peak_share"],
            }
            events.append(("stream.health_recovered", {**figures, "incident": incident}))
            s["degraded_ms"] += at - s["since"]
            s["since"], s["peak_dropped"], s["peak_share"] = None, 0, 0.0
        elif s["since"] is not None:
            s["peak_dropped"] = max(s["peak_dropped"], count.dropped)
            s["peak_share"] = max(s["peak_share"], share)
        return events

    @staticmethod
    def _cross(
        t: int, direction: str, n: int, s: dict[str, Any], *, initial: bool
    ) -> dict[str, Any]:
        return {
            "threshold": t,
            "direction": direction,
            "viewers": n,
            "peak_viewers": s["peak"],
            "initial": initial,
        }

    def states(self, places: dict[int, Place]) -> dict[StreamId, StreamState]:
        """The stream states a store should hold now, built from the recount."""
        counts = recount(places)
        assert set(counts) == set(self.live)
        return {
            StreamId(*stream): StreamState(
                count.viewers,
                count.measured,
                count.dropped,
                count.counters(0),
                count.counters(1),
                count.counters(2),
                s["started_at"],
                s["peak"],
                s["peak_at"],
                s["sessions"],
                tuple(sorted(s["reached"])),
                s["since"],
                s["peak_dropped"],
                s["peak_share"],
                s["degraded_ms"],
            )
            for stream, s in self.live.items()
            for count in (counts[stream],)
        }


# --- the production rules over the same polls ---------------------------------------------------


@dataclass
class Poll:
    """One poll as the production rules saw it."""

    at: int
    changes: list[Change]
    old: dict[StreamId, StreamState]
    detection: StreamDetection
    new: dict[StreamId, StreamState]
    places: dict[int, Place]  # every viewer in an audience after the poll


@dataclass
class Run:
    polls: list[Poll]
    adopted: dict[StreamId, StreamState]


Population = dict[int, Fields]


Edit = tuple[int, Fields | Literal["flip"] | None]  # a join or change, a health flip, a leave


def populations(steps: list[list[Edit]]) -> list[Population]:
    """Each poll edits the previous one's viewers (joins, leaves, changes), like a live cluster."""
    current: Population = {}
    out = []
    for edits in steps:
        for vid, fields in edits:
            if fields is None:
                current.pop(vid, None)
            elif fields == "flip":
                if vid in current:
                    *rest, _measured, dropped = current[vid]
                    current[vid] = (*rest, True, not dropped)
            else:
                current[vid] = fields
        out.append(dict(current))
    return out


def production(
    config: AudienceSettings,
    polls: list[Population],
    enable_at: int,
    *,
    rng: random.Random,
    restarts: set[int],
    noise: bool,
) -> Run:
    """Stream events turned on at poll ``enable_at`` (0: from the first poll, initial)."""
    members: dict[int, Member | None] = {}
    states: dict[StreamId, StreamState] = {}
    adopted: dict[StreamId, StreamState] = {}
    run: list[Poll] = []
    for index, population in enumerate(polls):
        at = index * 1000
        now = {vid: member_of(fields, config) for vid, fields in population.items()}
        if index == enable_at and index > 0:
            previous = [m for m in members.values() if m is not None]
            adopted = states = adopt(previous, polled_at=at - 1000, settings=config)
        if index >= enable_at:
            if index in restarts:  # a new process: only what a store holds
                states = {k: decode(encode(v)) for k, v in states.items()}
            changes = [
                (members.get(vid), now.get(vid))
                for vid in members.keys() | now.keys()
                if noise or members.get(vid) != now.get(vid)
            ]
            rng.shuffle(changes)
            detection = apply_streams(
                states, changes, polled_at=at, settings=config, initial=index == 0
            )
            new = dict(states)
            commit(new, detection)
            places = {vid: p for vid, f in population.items() if (p := place_of(f, config))}
            run.append(Poll(at, changes, states, detection, new, places))
            states = new
        members = now
    return Run(run, adopted)


def member_of(fields: Fields, config: AudienceSettings) -> Member | None:
    app, key, harness, country, device, measured, dropped = fields
    return member(
        application_id=app,
        stream_key=key,
        harness_type=harness,
        country_code=country,
        device_type=device,
        measured=measured,
        dropped=dropped,
        settings=config,
    )


def encode(state: StreamState) -> bytes:
    return msgspec.msgpack.encode(state)


def decode(blob: bytes) -> StreamState:
    return msgspec.msgpack.decode(blob, type=StreamState)


def as_event(emission: StreamEmission) -> tuple[tuple[str, str], tuple[str, dict[str, Any]]]:
    data = dataclasses.asdict(emission)
    stream = (data.pop("application_id"), data.pop("stream_key"))
    return stream, (emission.type, data)


def per_stream(
    emissions: list[StreamEmission],
) -> dict[tuple[str, str], list[tuple[str, dict[str, Any]]]]:
    grouped: dict[tuple[str, str], list[tuple[str, dict[str, Any]]]] = {}
    for emission in emissions:
        stream, event = as_event(emission)
        grouped.setdefault(stream, []).append(event)
    return grouped


# Few viewers on few streams, mostly in an audience, with every kind of bad field among them.
records = st.tuples(
    st.sampled_from(["a1"] * 6 + ["a2", None, ""]),
    st.sampled_from(["s1"] * 5 + ["s2"] * 2 + [None, "", 7]),
    st.sampled_from(["STORM_MSE_VIEWER"] * 5 + ["RTMP_VIEWER"] * 2 + ["RTMP_PUSH", "NEW", None]),
    st.sampled_from(["PL", "DE", "FR", None, ""]),
    st.sampled_from(["MOBILE", "DESKTOP", None]),
    st.booleans(),  # measured
    st.sampled_from([False, False, True]),  # dropped
)
edits = st.lists(
    st.tuples(st.integers(0, 11), st.one_of(records, st.none(), st.just("flip"))),
    min_size=1,
    max_size=5,
)
step_lists = st.lists(edits, min_size=4, max_size=30)
enable_ats = st.sampled_from([0, 0, 0, 1, 2, 3, 5, 8])  # 0: from the first poll, initial
configs = st.builds(
    lambda thresholds, hysteresis, shares, minimum: AudienceSettings(
        audience_thresholds=tuple(sorted(thresholds)),
        audience_hysteresis=hysteresis,
        recovered_share=min(shares),
        degraded_share=max(shares),
        degraded_min_viewers=minimum,
    ),
    st.sets(st.sampled_from([1, 2, 3, 4, 5, 6, 8]), max_size=4),
    st.sampled_from([0.0, 0.2, 0.25, 0.34, 0.5, 0.75]),
    st.lists(st.sampled_from([0.0, 0.2, 0.25, 1 / 3, 0.5, 2 / 3, 1.0]), min_size=2, max_size=2),
    st.integers(1, 3),
)
runs = st.builds(
    lambda cfg, steps, enable_at, seed, restarts, noise: (
        cfg,
        production(
            cfg,
            populations(steps),
            enable_at,
            rng=random.Random(seed),
            restarts=restarts,
            noise=noise,
        ),
    ),
    configs,
    step_lists,
    enable_ats,
    st.integers(0, 2**16),
    st.sets(st.integers(0, 29), max_size=5),
    st.booleans(),
)
PROPERTY = settings(max_examples=200, deadline=None, derandomize=True)


@PROPERTY
@given(config=configs, steps=step_lists, enable_at=enable_ats)
def test_the_rules_and_the_oracle_agree_on_every_event_and_every_state(
    config: AudienceSettings, steps: list[list[Edit]], enable_at: int
) -> None:
    """Per stream, the oracle's events (all fields) and states equal apply_streams' ones."""
    polls = populations(steps)
    rng = random.Random(enable_at)
    run = production(config, polls, enable_at, rng=rng, restarts={3, 7}, noise=False)
    oracle = Oracle(config)
    places_before: dict[int, Place] = {}
    if 0 < enable_at < len(polls):
        population = polls[enable_at - 1]
        places_before = {vid: p for vid, f in population.items() if (p := place_of(f, config))}
        oracle.adopt(places_before, (enable_at - 1) * 1000)
        assert run.adopted == oracle.states(places_before)
    for poll in run.polls:
        expected = {
            stream: events
            for stream, events in oracle.step(
                places_before, poll.places, poll.at, poll.at == 0
            ).items()
            if events
        }
        assert per_stream(poll.detection.emissions) == expected
        assert poll.new == oracle.states(poll.places)
        places_before = poll.places


@PROPERTY
@given(run=runs)
def test_the_counts_equal_a_recount_of_the_tracked_viewers(
    run: tuple[AudienceSettings, Run],
) -> None:
    """After every poll, each state's counters are those of its audience counted afresh."""
    _, result = run
    for poll in result.polls:
        counts = recount(poll.places)
        assert {tuple(stream) for stream in poll.new} == set(counts)
        for stream, state in poll.new.items():
            count = counts[stream]
            assert (state.viewers, state.measured, state.dropped) == (
                count.viewers,
                count.measured,
                count.dropped,
            )
            assert (state.countries, state.harnesses, state.devices) == (
                count.counters(0),
                count.counters(1),
                count.counters(2),
            )
            assert state.peak_viewers >= state.viewers


@PROPERTY
@given(run=runs)
def test_per_stream_the_events_alternate_and_follow_the_thresholds(
    run: tuple[AudienceSettings, Run],
) -> None:
    """started/ended alternate; crossings alternate per threshold and respect the hysteresis;
    degraded/recovered alternate inside an audience; ended says whether it ended degraded."""
    config, result = run
    alive = set(result.adopted)
    reached = {(s, t) for s, state in result.adopted.items() for t in state.reached}
    degraded: set[StreamId] = set()
    floor = 1 - config.audience_hysteresis
    for poll in result.polls:
        for emission in poll.detection.emissions:
            stream = StreamId(emission.application_id, emission.stream_key)
            if isinstance(emission, AudienceStarted):
                assert stream not in alive
                alive.add(stream)
                continue
            assert stream in alive  # nothing outside an audience, ended included
            if isinstance(emission, AudienceCrossed):
                key = (stream, emission.threshold)
                if emission.direction == "up":
                    assert key not in reached
                    assert emission.viewers >= emission.threshold
                    reached.add(key)
                else:
                    assert key in reached
                    assert emission.viewers < emission.threshold * floor
                    reached.discard(key)
                assert emission.peak_viewers >= emission.viewers
            elif isinstance(emission, StreamDegraded):
                assert stream not in degraded
                assert emission.share >= config.degraded_share
                assert emission.dropped >= config.degraded_min_viewers
                degraded.add(stream)
            elif isinstance(emission, StreamRecovered):
                assert stream in degraded
                assert (
                    emission.share < config.recovered_share
                    or emission.dropped < config.degraded_min_viewers
                )
                degraded.discard(stream)
            else:
                assert not any(s == stream for s, _ in reached)  # every down came first
                assert emission.summary.ended_degraded == (stream in degraded)
                alive.discard(stream)
                degraded.discard(stream)


@PROPERTY
@given(run=runs)
def test_changed_holds_exactly_the_touched_streams_whose_state_differs(
    run: tuple[AudienceSettings, Run],
) -> None:
    """No write without a difference, none for an untouched stream; None exactly when it ended."""
    _, result = run
    for poll in result.polls:
        touched = {m.stream for change in poll.changes for m in change if m is not None}
        changed = poll.detection.changed
        assert set(changed) <= touched
        ended = {
            StreamId(e.application_id, e.stream_key)
            for e in poll.detection.emissions
            if isinstance(e, AudienceEnded)
        }
        assert {s for s, state in changed.items() if state is None} == ended
        for stream in poll.old.keys() | poll.new.keys():
            differs = poll.old.get(stream) != poll.new.get(stream)
            assert (stream in changed) == differs


@PROPERTY
@given(run=runs)
def test_streams_come_in_the_order_they_first_appear_in_the_changes(
    run: tuple[AudienceSettings, Run],
) -> None:
    """A poll's events are grouped by stream, the groups in the order of the changes."""
    _, result = run
    for poll in result.polls:
        first_seen: list[StreamId] = []
        for change in poll.changes:
            if change[0] == change[1]:
                continue
            for one in change:
                if one is not None and one.stream not in first_seen:
                    first_seen.append(one.stream)
        groups: list[StreamId] = []
        for emission in poll.detection.emissions:
            stream = StreamId(emission.application_id, emission.stream_key)
            if not groups or groups[-1] != stream:
                assert stream not in groups  # contiguous
                groups.append(stream)
        assert groups == [s for s in first_seen if s in groups]
