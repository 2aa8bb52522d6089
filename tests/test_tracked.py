"""The lazy state after a poll (``rules.Tracked``): a steady viewer keeps one Track across polls,
and nothing anyone reads of it differs from a state made whole after every poll."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notifier.config import DetectionSettings
from notifier.detect.rules import Detection, Track, Tracked, _observe_health, _seen, detect
from notifier.storm import Viewer
from notifier.storm.decode import decode_page

if TYPE_CHECKING:
    from notifier.events import Emission

IDS = ["a", "b", "c", "d", "e"]
# Scores exact in binary (runs are lazy) and not (84.64: added once per poll), zeros of both signs.
score_strategy = st.one_of(
    st.none(), st.sampled_from([10.0, 60.0, 80.0, 100.0, 55.5, 84.64, 54.94, 73.3, 0.0, -0.0])
)
grade_strategy = st.sampled_from(["Good", "Good", "Bad"])
SAME = "same"  # listed as in the poll before: most polls, so that runs are long
listed = st.dictionaries(
    st.sampled_from(IDS),
    st.one_of(
        st.just(SAME), st.just(SAME), st.just(SAME), st.tuples(score_strategy, grade_strategy)
    ),
)
poll_strategy = st.tuples(
    listed,
    st.sets(st.sampled_from(IDS)),  # found by a lookup if the list left them out
    st.booleans(),  # the lookup could not be done: misses are not counted
)
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
    st.integers(1, 4),
    st.sampled_from([0, 30, 50, 70]),
    st.sampled_from([0, 20]),
    st.integers(1, 3),
)


def viewer(vid: str, score: float | None, grade: str, at: int) -> Viewer:
    """A record that differs every poll (as Storm's do: ``duration`` moves on)."""
    raw = json.dumps({"id": vid, "healthScore": score or 0, "duration": at}).encode()
    return Viewer(id=vid, health=score, health_grade=grade, raw=raw)


Measure = tuple[float | None, str]
Poll = tuple[dict[str, Measure | str], set[str], bool]


def run(
    tracked: dict[str, Track] | Tracked,
    poll: tuple[dict[str, Measure], set[str], bool],
    at: int,
    config: DetectionSettings,
) -> Detection:
    listed, found, failed = poll
    seen = {vid: viewer(vid, score, grade, at) for vid, (score, grade) in listed.items()}
    confirmed = {vid: viewer(vid, 80.0, "Good", at) for vid in found if vid not in seen}
    return detect(
        tracked,
        seen,
        polled_at=1000 * at,
        settings=config,
        confirmed=confirmed,
        count_misses=not failed,
    )


@settings(max_examples=400, deadline=None)
@given(config=config_strategy, polls=st.lists(poll_strategy, max_size=60))
def test_the_lazy_state_reads_as_a_state_made_whole_after_every_poll(
    config: DetectionSettings, polls: list[Poll]
) -> None:
    """Events (their session summaries included), writes and the state read back are the same,
    to the bit, whether the state carries its runs from poll to poll or is made whole after
    each (a run of one poll: what the rules did before runs)."""
    lazy: Tracked | dict[str, Track] = {}
    eager: dict[str, Track] = {}
    last: dict[str, Measure] = {}
    for at, (listed, found, failed) in enumerate(polls):
        measures: dict[str, Measure] = {}
        for vid, measure in listed.items():
            measures[vid] = last.get(vid, (80.0, "Good")) if isinstance(measure, str) else measure
        last.update(measures)
        poll = (measures, found, failed)
        got, want = run(lazy, poll, at, config), run(eager, poll, at, config)
        assert got.emissions == want.emissions
        assert got.upserts == want.upserts
        assert got.deletes == want.deletes
        assert dict(got.state) == dict(want.state)
        assert repr(dict(got.state)) == repr(dict(want.state))  # -0.0 and 0.0 differ here
        assert all(track.run < 0 for track in got.upserts.values())
        lazy, eager = got.state, dict(want.state)


def test_a_steady_viewer_keeps_one_track_and_reads_with_its_polls_counted() -> None:
    config = DetectionSettings()
    state: Tracked | dict[str, Track] = {}
    kept = []
    for at in range(5):
        detection = detect(
            state,
            {"a": viewer("a", 80.0, "Good", at)},
            polled_at=1000 * at,
            settings=config,
        )
        state = detection.state
        kept.append(state.tracks["a"])
    assert kept[0] is not kept[1]  # the run begins at the second poll
    assert kept[1] is kept[2] is kept[3] is kept[4]
    whole = state["a"]
    assert (whole.polls, whole.measured_polls, whole.health_sum) == (5, 5, 400.0)
    assert whole.seen_at == 4000
    assert json.loads(whole.record)["duration"] == 4  # the newest record
    assert whole.run == -1


def test_a_state_of_whole_tracks_refuses_a_track_of_a_run() -> None:
    track = Track(record=b"{}", seen_at=0, last_score=80.0, run=3)
    with pytest.raises(ValueError, match="run"):
        Tracked.of({"a": track})


def test_a_session_of_scores_inexact_in_binary_averages_as_added_poll_by_poll() -> None:
    """54.94 then 84.64 three times: the average a poll-by-poll sum gives (77.21), not the one
    a multiplication would (77.22)."""
    config = DetectionSettings()
    state: Tracked | dict[str, Track] = {}
    scores = [54.94, 84.64, 84.64, 84.64]
    for at, score in enumerate(scores):
        state = detect(
            state, {"a": viewer("a", score, "Good", at)}, polled_at=1000 * at, settings=config
        ).state
    expected = 0.0
    for score in scores:
        expected += score
    assert state["a"].health_sum == expected
    assert round(expected / 4, 2) == 77.21


@settings(max_examples=300, deadline=None)
@given(
    config=config_strategy,
    score=st.one_of(st.none(), st.floats(-1, 101, allow_nan=False), st.sampled_from([0.0, -0.0])),
)
def test_a_join_is_tracked_as_the_general_rules_track_it(
    config: DetectionSettings, score: float | None
) -> None:
    """The inline join (measured, heading for no drop) is the Track the general path builds."""
    joined = viewer("a", score, "Good", 0)
    got = detect({}, {"a": joined}, polled_at=5000, settings=config).state["a"]
    emissions: list[Emission] = []
    base = _seen(Track(record=joined.record_bytes(), seen_at=5000, connected_at=5000), joined)
    want = _observe_health(base, joined, config.health, emissions, 5000)
    assert repr(got) == repr(want)


def test_a_state_holds_the_page_bodies_only_while_most_viewers_are_in_a_run() -> None:
    """Listed records are views of the page body: the state keeps them for its run Tracks
    while those are most of it; with few runs it keeps copies of theirs and lets the body go."""

    def page(scores: dict[str, float], at: int) -> dict[str, Viewer]:
        rows = [
            {"id": v, "healthScore": s, "healthGrade": "Good", "n": at} for v, s in scores.items()
        ]
        return {v.id: v for v in decode_page(json.dumps({"data": {"list": rows}}).encode()).viewers}

    config = DetectionSettings()
    first = page({"a": 80.0, "b": 80.0, "c": 80.0, "d": 80.0}, 0)
    state = detect({}, first, polled_at=0, settings=config).state
    steady = detect(
        state,
        page({"a": 80.0, "b": 80.0, "c": 80.0, "d": 81.0}, 1),
        polled_at=1000,
        settings=config,
    ).state
    assert isinstance(steady._seen["a"].raw, msgspec.Raw)  # 3 of 4 in a run: the body is kept
    few = detect(
        steady,
        page({"a": 80.0, "b": 82.0, "c": 83.0, "d": 84.0}, 2),
        polled_at=2000,
        settings=config,
    ).state
    assert few.tracks["a"].run >= 0
    assert list(few._seen) == ["a"]  # 1 of 4: a copy of its record alone
    assert type(few._seen["a"].raw) is bytes
    assert [json.loads(few[v].record)["n"] for v in "abcd"] == [2, 2, 2, 2]
