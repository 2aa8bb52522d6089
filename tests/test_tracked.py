"""The lazy state after a poll (``rules.Tracked``): a steady viewer keeps one Track across polls,
and nothing anyone reads of it differs from a state made whole after every poll."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notifier.config import DetectionSettings
from notifier.detect.rules import Detection, Track, Tracked, detect
from notifier.storm import Viewer

IDS = ["a", "b", "c", "d", "e"]
# Few scores and grades, so that a viewer is often measured the same poll after poll (a run).
score_strategy = st.one_of(st.none(), st.sampled_from([10.0, 60.0, 80.0, 80.0, 100.0, 55.5]))
grade_strategy = st.sampled_from(["Good", "Good", "Bad"])
listed = st.dictionaries(st.sampled_from(IDS), st.tuples(score_strategy, grade_strategy))
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
    st.sampled_from([30, 50, 70]),
    st.sampled_from([0, 20]),
    st.integers(1, 3),
)


def viewer(vid: str, score: float | None, grade: str, at: int) -> Viewer:
    """A record that differs every poll (as Storm's do: ``duration`` moves on)."""
    raw = json.dumps({"id": vid, "healthScore": score or 0, "duration": at}).encode()
    return Viewer(id=vid, health=score, health_grade=grade, raw=raw)


def run(
    tracked: dict[str, Track] | Tracked,
    poll: tuple[dict[str, tuple[float | None, str]], set[str], bool],
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
@given(config=config_strategy, polls=st.lists(poll_strategy, max_size=30))
def test_the_lazy_state_reads_as_a_state_made_whole_after_every_poll(
    config: DetectionSettings,
    polls: list[tuple[dict[str, tuple[float | None, str]], set[str], bool]],
) -> None:
    """Events (their session summaries included), writes and the state read back are the same
    whether the state carries its runs from poll to poll or is made whole after each."""
    lazy: Tracked | dict[str, Track] = {}
    eager: dict[str, Track] = {}
    for at, poll in enumerate(polls):
        got, want = run(lazy, poll, at, config), run(eager, poll, at, config)
        assert got.emissions == want.emissions
        assert got.upserts == want.upserts
        assert got.deletes == want.deletes
        assert dict(got.state) == dict(want.state)
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
