"""The end-to-end tests' ground truth (``testkit.detection_support``) against the real rules.

``expected_events`` is a second, plain implementation of ``docs/events.md``; here it and
``detect()`` + ``render_data`` must agree over any sequence of polls, so each checks the other.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from hypothesis import given, settings
from hypothesis import strategies as st

from notifier.config import DetectionSettings
from notifier.detect.rules import Track, detect
from notifier.events import render_data
from notifier.storm.decode import decode_viewer
from testkit.detection_support import expected_events

if TYPE_CHECKING:
    from collections.abc import Mapping

    from notifier.storm import Viewer

PerViewer = dict[str, list[tuple[str, dict[str, Any]]]]


def production_events(states: list[list[dict[str, Any]]], config: DetectionSettings) -> PerViewer:
    """Per viewer, (type, data without lastSeenAt) as ``detect()`` and ``render_data`` give."""
    tracked: Mapping[str, Track] = {}
    out: PerViewer = {}
    for at, records in enumerate(states):
        seen: dict[str, Viewer] = {}
        for record in records:
            viewer = decode_viewer(json.dumps(record, separators=(",", ":")).encode())
            seen[viewer.id] = viewer
        detection = detect(tracked, seen, polled_at=at, settings=config, initial=at == 0)
        for emission in detection.emissions:
            data = {"viewer": json.loads(emission.record), **render_data(emission)}
            data.pop("lastSeenAt", None)
            if "session" in data:  # its counts; the times are the stream's (detection_support)
                session = data["session"]
                data["session"] = {k: session[k] for k in ("polls", "health", "drops", "complete")}
            out.setdefault(emission.viewer_id, []).append((emission.type, data))
        tracked = detection.state
    return out


def assert_same(left: PerViewer, right: PerViewer) -> None:
    """Equal, and equal as JSON too (``50 == 50.0``, but an event carries ``50``)."""
    assert left == right
    assert json.dumps(left, sort_keys=True) == json.dumps(right, sort_keys=True)


def record(vid: str, score: Any = 90, grade: Any = "Very Good", **extra: Any) -> dict[str, Any]:
    """A viewer record as the list returns it."""
    return {"id": vid, "healthScore": score, "healthGrade": grade, **extra}


# --- examples read off docs/events.md ----------------------------------------------------------


def test_the_oracle_gives_the_documented_events_and_data() -> None:
    """Connect, drop after two low polls (No Data in between), recover, disconnect after two."""
    states = [
        [record("a", 88.0, "Very Good")],
        [record("a", 42, "Bad")],
        [record("a", 0, "No Data")],  # no measurement: neither counts nor resets
        [record("a", 31.5, "Bad")],
        [record("a", 75, "Good")],
        [],  # absent: the recovery streak carries on
        [record("a", 93, "Very Good", streamKey="live-2")],
        [],
        [],
    ]
    documented: PerViewer = {
        "a": [
            ("viewer.connected", {"viewer": states[0][0], "initial": True}),
            (
                "viewer.health_dropped",
                {
                    "viewer": states[3][0],
                    "previous": {"healthScore": 88, "healthGrade": "Very Good"},
                    "threshold": 50,
                },
            ),
            (
                "viewer.health_recovered",
                {
                    "viewer": states[6][0],
                    "previous": {"healthScore": 31.5, "healthGrade": "Bad"},
                    "threshold": 70,
                },
            ),
            (
                "viewer.disconnected",
                {
                    "viewer": states[6][0],
                    "session": {
                        "polls": 6,
                        "health": {"min": 31.5, "max": 93, "avg": 65.9, "measuredPolls": 5},
                        "drops": 1,
                        "complete": True,
                    },
                },
            ),
        ]
    }
    assert_same(expected_events(states, DetectionSettings()), documented)
    assert_same(production_events(states, DetectionSettings()), documented)


def test_a_viewer_low_from_its_first_polls_drops_with_no_previous_measurement() -> None:
    """Low from the start: previous is all null; a score of 0 without a grade is no data."""
    config = DetectionSettings.model_validate({"health": {"drop_below": 40.5}})
    states = [[record("b", 0, None)], [record("b", 10, "Bad")], [record("b", 12.0, None)]]
    events = expected_events(states, config)["b"]
    assert [kind for kind, _ in events] == ["viewer.connected", "viewer.health_dropped"]
    assert events[1][1]["previous"] == {"healthScore": None, "healthGrade": None}
    assert events[1][1]["threshold"] == 40.5
    assert_same(expected_events(states, config), production_events(states, config))


def test_a_viewer_that_comes_back_is_a_new_viewer() -> None:
    """Disconnected then listed again: connected anew, its health history forgotten."""
    config = DetectionSettings.model_validate(
        {"disconnect_after_missed_polls": 1, "health": {"consecutive_polls": 1}}
    )
    states = [[record("c", 20, "Bad")], [], [record("c", 30, "Bad")]]
    kinds = [kind for kind, _ in expected_events(states, config)["c"]]
    assert kinds == [
        "viewer.connected",
        "viewer.health_dropped",
        "viewer.disconnected",
        "viewer.connected",
        "viewer.health_dropped",
    ]
    assert_same(expected_events(states, config), production_events(states, config))


# --- the two implementations over random polls -------------------------------------------------

# Scores sit on and around the thresholds, which are drawn from the same few values.
LEVELS = [0, 0.5, 20, 49.5, 50, 60, 69.5, 70, 100]
scores = st.one_of(
    st.none(),
    st.integers(0, 100),
    st.sampled_from(LEVELS),
    st.sampled_from([float(level) for level in LEVELS]),
    st.sampled_from(["55", "12.5", "0", "n/a", ""]),
    st.booleans(),
)
grades = st.one_of(
    st.none(),
    st.sampled_from(["Good", "Bad", "Very Bad", "", "No Data", "NO DATA", "no_data", "no-data"]),
    st.integers(0, 3),
)
records = st.fixed_dictionaries(
    {"id": st.sampled_from(["a", "b", "c", "d", "e"])},
    optional={
        "healthScore": scores,
        "healthGrade": grades,
        "streamKey": st.sampled_from(["live-1", "live-2"]),
    },
)
polls = st.lists(records, max_size=6, unique_by=lambda r: r["id"])
configs = st.builds(
    lambda missed, drop, gap, consecutive: DetectionSettings.model_validate(
        {
            "disconnect_after_missed_polls": missed,
            "health": {
                "drop_below": drop,
                "recover_at": min(100, drop + gap),
                "consecutive_polls": consecutive,
            },
        }
    ),
    st.integers(1, 3),
    st.sampled_from(LEVELS),
    st.sampled_from([0, 0.5, 10, 20.5]),
    st.integers(1, 3),
)


@settings(max_examples=200, deadline=None)
@given(config=configs, states=st.lists(polls, max_size=25))
def test_the_oracle_and_the_rules_agree_on_every_event_and_its_data(
    config: DetectionSettings, states: list[list[dict[str, Any]]]
) -> None:
    """Over random polls, per viewer, the oracle's (type, data) equal detect()'s rendered ones."""
    assert_same(expected_events(states, config), production_events(states, config))
