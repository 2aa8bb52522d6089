"""The pure detection rules: examples, and properties over random poll sequences."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from notifier.config import DetectionSettings
from notifier.detect.rules import UNLISTED_LIMIT, Detection, Track, detect
from notifier.detect.store import TrackCodec
from notifier.events import render_data
from notifier.storm import Viewer

if TYPE_CHECKING:
    from collections.abc import Mapping

SETTINGS = DetectionSettings()  # 2 missed polls, drop < 50, recover >= 70, 2 consecutive


def viewer(
    vid: str, score: float | None = 90, grade: str | None = "Very Good", **extra: Any
) -> Viewer:
    record = {
        "id": vid,
        "healthScore": 0 if score is None else score,
        "healthGrade": grade,
        **extra,
    }
    if score is None:
        record["healthGrade"] = "No Data"
    raw = json.dumps(record).encode()
    return Viewer(id=vid, health=score, health_grade=None if score is None else grade, raw=raw)


def step(
    tracked: Mapping[str, Track],
    *viewers: Viewer,
    at: int = 0,
    config: DetectionSettings = SETTINGS,
) -> Detection:
    return detect(tracked, {v.id: v for v in viewers}, polled_at=at, settings=config)


def types(detection: Detection) -> list[tuple[str, str]]:
    return [(e.type, e.viewer_id) for e in detection.emissions]


def per_viewer(events: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Events grouped by viewer, in order: the order across viewers carries no meaning."""
    grouped: dict[str, list[str]] = {}
    for kind, vid in events:
        grouped.setdefault(vid, []).append(kind)
    return grouped


def test_a_new_viewer_is_connected_once() -> None:
    """First sight emits connected with the record; later sights emit nothing."""
    first = step({}, viewer("a"), at=1000)
    assert types(first) == [("viewer.connected", "a")]
    assert first.emissions[0].record == viewer("a").raw
    assert set(first.upserts) == {"a"}
    second = step(first.state, viewer("a", duration=5), at=2000)
    assert types(second) == []
    assert second.upserts == {}  # only the record moved: nothing for Redis to write
    assert second.state["a"].seen_at == 2000
    assert json.loads(second.state["a"].record)["duration"] == 5


def test_disconnect_needs_consecutive_missed_polls_and_carries_the_last_record() -> None:
    """One miss is remembered; the second consecutive miss disconnects with the last record."""
    state = step({}, viewer("a"), viewer("b"), at=1000).state
    last = viewer("a", 80, "Very Good", duration=99)
    state = step(state, last, viewer("b"), at=2000).state
    missed_once = step(state, viewer("b"), at=3000)
    assert types(missed_once) == []
    assert missed_once.upserts["a"].missed == 1
    assert missed_once.upserts["a"].record == last.raw  # Redis gets the last record now
    back = step(missed_once.state, viewer("a"), viewer("b"), at=4000)
    assert types(back) == []
    assert back.upserts["a"].missed == 0
    state = step(back.state, viewer("b"), at=5000).state
    gone = step(state, viewer("b"), at=6000)
    assert types(gone) == [("viewer.disconnected", "a")]
    (event,) = gone.emissions
    data = render_data(event)
    assert data["lastSeenAt"] == "1970-01-01T00:00:04.000Z"
    assert data["session"]["polls"] == 3
    assert gone.deletes == ["a"]
    assert "a" not in gone.state


def test_health_drop_needs_consecutive_polls_with_data() -> None:
    """A drop fires on the 2nd low sample; "No Data" and absence neither count nor reset."""
    state = step({}, viewer("a", 85, "Very Good")).state
    low1 = step(state, viewer("a", 30, "Bad"))
    assert types(low1) == []
    no_data = step(low1.state, viewer("a", None))
    assert types(no_data) == []
    absent = step(no_data.state)
    assert types(absent) == []
    low2 = step(absent.state, viewer("a", 20, "Very Bad"))
    assert types(low2) == [("viewer.health_dropped", "a")]
    (event,) = low2.emissions
    assert render_data(event) == {
        "previous": {"healthScore": 85, "healthGrade": "Very Good"},
        "threshold": 50,
    }
    assert low2.upserts["a"].dropped is True


def test_a_good_sample_resets_the_drop_streak() -> None:
    """low, ok, low: no drop, the count starts again."""
    state = step({}, viewer("a", 90)).state
    for score in (40, 60, 40):
        detection = step(state, viewer("a", score, "x"))
        assert types(detection) == []
        state = detection.state
    assert types(step(state, viewer("a", 45, "x"))) == [("viewer.health_dropped", "a")]


def test_recovery_has_hysteresis() -> None:
    """After a drop, scores between the thresholds neither recover nor drop again."""
    config = DetectionSettings.model_validate({"health": {"consecutive_polls": 1}})
    state = step({}, viewer("a", 90), config=config).state
    dropped = step(state, viewer("a", 10, "Very Bad"), config=config)
    assert types(dropped) == [("viewer.health_dropped", "a")]
    state = dropped.state
    for score in (60, 65, 40, 69):
        detection = step(state, viewer("a", score, "x"), config=config)
        assert types(detection) == []
        state = detection.state
    recovered = step(state, viewer("a", 70, "Good"), config=config)
    assert types(recovered) == [("viewer.health_recovered", "a")]
    assert render_data(recovered.emissions[0]) == {
        "previous": {"healthScore": 69, "healthGrade": "x"},
        "threshold": 70,
    }


def test_a_new_viewer_with_bad_health_connects_before_it_drops() -> None:
    """With one-poll confirmation, a bad first sample emits connected, then dropped."""
    config = DetectionSettings.model_validate({"health": {"consecutive_polls": 1}})
    detection = step({}, viewer("a", 5, "Very Bad"), config=config)
    assert types(detection) == [("viewer.connected", "a"), ("viewer.health_dropped", "a")]
    assert render_data(detection.emissions[1])["previous"] == {
        "healthScore": None,
        "healthGrade": None,
    }


def test_tracks_round_trip_through_msgpack() -> None:
    """What Redis stores decodes to the same Track."""
    track = Track(
        record=b'{"id":"a"}',
        seen_at=5,
        missed=1,
        dropped=True,
        streak=1,
        anchor_score=42.5,
        anchor_grade="Bad",
        last_score=30,
        last_grade="Bad",
    )
    blob = TrackCodec.encode(track, synced=7)
    assert TrackCodec.decode(blob, polls=7) == track


def test_whole_number_scores_are_stored_as_integers_and_read_back_as_the_same_floats() -> None:
    """A whole score takes one byte of msgpack, not nine; a fractional one is kept as it is;
    both read back as the floats they were."""
    track = Track(
        record=b'{"id":"a"}',
        seen_at=5,
        anchor_score=42.5,
        last_score=87.0,
        health_min=42.5,
        health_max=87.0,
        health_sum=1e15,
        polls=3,
        measured_polls=3,
    )
    blob = TrackCodec.encode(track, synced=1)
    stored = msgspec.msgpack.decode(blob)
    assert [stored[i] for i in (6, 8, 13, 14, 15)] == [42.5, 87, 42.5, 87, 10**15]
    assert [type(stored[i]) for i in (8, 14, 15)] == [int, int, int]
    back = TrackCodec.decode(blob, polls=1)
    assert back == track
    assert type(back.last_score) is float
    assert type(back.health_sum) is float


# --- properties over random poll sequences ---------------------------------------------------

IDS = ["a", "b", "c", "d"]
sample = st.one_of(st.none(), st.integers(min_value=0, max_value=100))
poll_strategy = st.dictionaries(st.sampled_from(IDS), sample, max_size=len(IDS))
config_strategy = st.builds(
    lambda missed, drop, gap, consecutive: DetectionSettings.model_validate(
        {
            "disconnect_after_missed_polls": missed,
            "health": {
                "drop_below": drop,
                "recover_at": drop + gap,
                "consecutive_polls": consecutive,
            },
        }
    ),
    st.integers(1, 3),
    st.integers(1, 90),
    st.integers(0, 10),
    st.integers(1, 3),
)


def _viewers(poll: dict[str, int | None]) -> list[Viewer]:
    return [viewer(vid, score, "g") for vid, score in poll.items()]


class Oracle:
    """An independent, deliberately plain model of SPEC section 4, per viewer."""

    def __init__(self, config: DetectionSettings) -> None:
        self.config = config
        self.present: dict[str, dict[str, Any]] = {}

    def step(self, poll: dict[str, int | None]) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        health = self.config.health
        for vid, score in poll.items():
            v = self.present.get(vid)
            if v is None:
                out.append(("viewer.connected", vid))
                v = self.present[vid] = {"missed": 0, "dropped": False, "run": 0}
            v["missed"] = 0
            if score is None:
                continue
            bad = score < health.drop_below if not v["dropped"] else score >= health.recover_at
            v["run"] = v["run"] + 1 if bad else 0
            if v["run"] == health.consecutive_polls:
                kind = "viewer.health_recovered" if v["dropped"] else "viewer.health_dropped"
                out.append((kind, vid))
                v["dropped"] = not v["dropped"]
                v["run"] = 0
        for vid in [vid for vid in self.present if vid not in poll]:
            self.present[vid]["missed"] += 1
            if self.present[vid]["missed"] == self.config.disconnect_after_missed_polls:
                out.append(("viewer.disconnected", vid))
                del self.present[vid]
        return out


@settings(max_examples=300, deadline=None)
@given(config=config_strategy, polls=st.lists(poll_strategy, max_size=25))
def test_rules_match_an_independent_model(
    config: DetectionSettings, polls: list[dict[str, int | None]]
) -> None:
    """Over any poll sequence the events equal those of a plain reference model."""
    oracle = Oracle(config)
    state: Mapping[str, Track] = {}
    for at, poll in enumerate(polls):
        detection = step(state, *_viewers(poll), at=at, config=config)
        assert per_viewer(types(detection)) == per_viewer(oracle.step(poll))
        state = detection.state


@settings(max_examples=300, deadline=None)
@given(config=config_strategy, polls=st.lists(poll_strategy, max_size=25))
def test_event_order_per_viewer_is_causal(
    config: DetectionSettings, polls: list[dict[str, int | None]]
) -> None:
    """Per viewer: connected, then alternating drop/recover, then at most one disconnected."""
    state: Mapping[str, Track] = {}
    history: dict[str, list[str]] = {vid: [] for vid in IDS}
    for at, poll in enumerate(polls):
        detection = step(state, *_viewers(poll), at=at, config=config)
        for emission in detection.emissions:
            history[emission.viewer_id].append(emission.type.removeprefix("viewer."))
            if emission.type in ("viewer.health_dropped", "viewer.health_recovered"):
                score = poll[emission.viewer_id]
                assert score is not None  # never on a poll without data
                if emission.type == "viewer.health_dropped":
                    assert score < config.health.drop_below
                else:
                    assert score >= config.health.recover_at
        state = detection.state
    for events in history.values():
        session: list[str] = []
        for event in events:
            if event == "connected":
                assert not session or session[-1] == "disconnected"
                session = ["connected"]
                continue
            assert session
            assert session[0] == "connected"
            assert session[-1] != "disconnected"
            if event == "health_dropped":
                assert session[-1] in ("connected", "health_recovered")
            elif event == "health_recovered":
                assert session[-1] == "health_dropped"
            session.append(event)


@settings(max_examples=300, deadline=None)
@given(
    config=config_strategy,
    polls=st.lists(poll_strategy, max_size=25),
    restarts=st.sets(st.integers(0, 24)),
)
def test_state_written_to_redis_is_enough_to_carry_on(
    config: DetectionSettings, polls: list[dict[str, int | None]], restarts: set[int]
) -> None:
    """Only upserts and deletes reach Redis; a restart from them changes no event."""
    memory: Mapping[str, Track] = {}
    stored: dict[str, bytes] = {}
    restarted: Mapping[str, Track] = {}
    for at, poll in enumerate(polls):
        viewers = _viewers(poll)
        expected = step(memory, *viewers, at=at, config=config)
        if at in restarts:  # a new process: only what Redis holds
            restarted = {k: TrackCodec.decode(v, polls=0) for k, v in stored.items()}
        actual = step(restarted, *viewers, at=at, config=config)
        assert per_viewer(types(actual)) == per_viewer(types(expected))
        for vid, track in actual.upserts.items():
            stored[vid] = TrackCodec.encode(track, synced=0)
        for vid in actual.deletes:
            stored.pop(vid, None)
        assert set(stored) == set(actual.state)
        memory, restarted = expected.state, actual.state


def test_a_viewer_confirmed_by_lookup_stays_but_not_forever() -> None:
    """Left out of the list but found by lookup: seen, for UNLISTED_LIMIT polls; then missed."""
    state = step({}, viewer("a", 90)).state
    for at in range(1, UNLISTED_LIMIT + 1):
        found = {"a": viewer("a", 30, "Bad", duration=at)}
        detection = detect(state, {}, confirmed=found, polled_at=at, settings=SETTINGS)
        state = detection.state
        assert state["a"].missed == 0
        assert state["a"].unlisted == at
        assert "duration" not in json.loads(state["a"].record)  # the list's record is kept
        if at == 2:  # lookup samples count toward health like listed ones
            assert types(detection) == [("viewer.health_dropped", "a")]
    found = {"a": viewer("a", 30, "Bad")}
    fourth = detect(state, {}, confirmed=found, polled_at=9, settings=SETTINGS)
    assert types(fourth) == []
    assert fourth.state["a"].missed == 1
    fifth = detect(fourth.state, {}, confirmed=found, polled_at=10, settings=SETTINGS)
    assert types(fifth) == [("viewer.disconnected", "a")]
    listed_again = detect(state, {"a": viewer("a")}, polled_at=11, settings=SETTINGS)
    assert listed_again.state["a"].unlisted == 0


def test_event_ids_are_uuid5_of_sequence_type_and_viewer() -> None:
    """The fast event id equals the standard uuid5 over "sequence:type:viewer"."""
    import uuid  # noqa: PLC0415

    from notifier.events import event_id  # noqa: PLC0415

    epoch = str(uuid.uuid4())
    expected = uuid.uuid5(uuid.UUID(epoch), "41:viewer.connected:v_1")
    assert event_id(epoch, 41, "viewer.connected", "v_1") == str(expected)
    assert event_id(epoch, 41, "viewer.disconnected", "v_1") != str(expected)


def test_a_disconnect_carries_the_sessions_summary() -> None:
    """Connected at 1s, seen 8 polls (one without data), dropped at 3s, recovered at 6s, dropped
    again at 8s and last seen then: 7 measured polls, 2 drops, 3s dropped."""
    scores = [90, 40, 30, None, 80, 75, 20, 10]
    tracked: Mapping[str, Track] = {}
    kinds = []
    for second, score in enumerate(scores, start=1):
        detection = step(tracked, viewer("a", score), at=second * 1000)
        kinds += [kind for kind, _ in types(detection)]
        tracked = detection.state
    for second in (9, 10):
        detection = step(tracked, at=second * 1000)
        tracked = detection.state
    (gone,) = detection.emissions
    assert kinds == [
        "viewer.connected",
        "viewer.health_dropped",
        "viewer.health_recovered",
        "viewer.health_dropped",
    ]
    assert gone.type == "viewer.disconnected"
    assert gone.session is not None
    session = gone.session
    assert (session.connected_at, session.duration_ms, session.polls) == (1000, 7000, 8)
    assert (session.health_min, session.health_max, session.measured_polls) == (10, 90, 7)
    assert session.health_avg == sum(s for s in scores if s is not None) / 7
    assert session.drops == 2
    assert session.degraded_ms == (6000 - 3000) + (8000 - 8000)  # 3s..6s, then 8s..8s
    assert session.complete


def test_only_the_first_poll_from_no_state_marks_connected_events_initial() -> None:
    """``initial`` is the caller's: the first poll's connects carry it, a later joiner not."""
    first = detect({}, {"a": viewer("a")}, polled_at=0, settings=SETTINGS, initial=True)
    later = step(first.state, viewer("a"), viewer("b"), at=1000)
    assert [e.initial for e in first.emissions if e.type == "viewer.connected"] == [True]
    assert [e.initial for e in later.emissions if e.type == "viewer.connected"] == [False]


def test_a_session_read_from_an_older_layout_or_written_polls_ago_is_not_complete() -> None:
    """A track written at poll 3 and read at poll 5 may lack two polls; layout 1 had none."""
    track = step({}, viewer("a"), at=1000).state["a"]
    assert TrackCodec.decode(TrackCodec.encode(track, synced=5), polls=5).complete
    assert not TrackCodec.decode(TrackCodec.encode(track, synced=3), polls=5).complete
    layout_1 = msgspec.msgpack.encode(
        [1, track.record, 1000, 0, False, 0, None, None, 90.0, "Very Good", 0]
    )
    old = TrackCodec.decode(layout_1, polls=5)
    assert (old.connected_at, old.complete, old.last_score) == (1000, False, 90.0)
