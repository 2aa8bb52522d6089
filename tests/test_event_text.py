"""Events as one aligned line for people (`tail --format text`, the stdout sink's text)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from notifier.events.text import TYPE_WIDTH, TextFormat, event_line, wants_color

DOCS = Path(__file__).resolve().parent.parent / "docs" / "events.md"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def documented_events() -> list[dict[str, Any]]:
    """Every complete event example of docs/events.md."""
    text = DOCS.read_text(encoding="utf-8")
    blocks = re.findall(r"```json\n(\{\n  \"specversion\".*?)\n```", text, flags=re.DOTALL)
    return [json.loads(block) for block in blocks]


EVENTS = documented_events()


def by_type(kind: str) -> dict[str, Any]:
    return next(event for event in EVENTS if event["type"] == kind)


def test_every_documented_type_has_an_example() -> None:
    """The examples cover the nine types, so the tests below see each of them."""
    assert len({event["type"] for event in EVENTS}) == 9


def test_lines_are_aligned_and_carry_the_named_fields_only() -> None:
    """Time, cluster, type and stream key line up; no IP address ever appears."""
    lines = [event_line(event) for event in EVENTS]
    for event, line in zip(EVENTS, lines, strict=True):
        assert "\n" not in line
        assert line[:12] == event["time"][11:23]
        assert line[14:18] == "eu-1"
        assert line[20 : 20 + TYPE_WIDTH].rstrip() == event["type"]
        viewer = event["data"].get("viewer", {})
        assert viewer.get("remoteAddress", "no address") not in line
        if viewer:
            assert line.index(viewer["id"]) == 20 + TYPE_WIDTH + 2 + 16 + 2
            assert f"  {viewer['countryCode']}  " in line


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("viewer.connected", "IT  83 Very Good"),
        ("viewer.disconnected", "last 50 Average  after 20 min 10 s"),
        ("viewer.health_dropped", "42 Bad  was 88 Very Good, below 50"),
        ("viewer.health_recovered", "93 Very Good  was 31 Bad, at least 70"),
        ("stream.audience_started", "viewers 4"),
        ("stream.audience_crossed", "viewers 1003, up through 1000, peak 1003"),
        ("stream.health_degraded", "viewers 1204, dropped 324 of 1200 measured (27%)"),
        ("stream.health_recovered", "(5%), after 12 min 30 s, peak 402 (34%)"),
        (
            "stream.audience_ended",
            "lasted 2 h 12 min, peak 1266, 1874 sessions, degraded 12 min 30 s",
        ),
    ],
)
def test_each_type_shows_its_key_figures(kind: str, expected: str) -> None:
    """Viewer events show health (and what it was); stream events their figures."""
    assert event_line(by_type(kind)).endswith(expected)


def test_colour_only_when_asked_and_health_by_score() -> None:
    """ANSI colours on request: the type by kind, the score green, yellow or red."""
    dropped = by_type("viewer.health_dropped")
    plain = event_line(dropped)
    coloured = event_line(dropped, color=True)
    assert ANSI.search(plain) is None
    assert ANSI.sub("", coloured) == plain
    assert "\x1b[1;31mviewer.health_dropped" in coloured
    assert "\x1b[31m42 Bad\x1b[0m" in coloured
    assert "\x1b[32m83 Very Good\x1b[0m" in event_line(by_type("viewer.connected"), color=True)
    viewer = {"id": "v", "healthScore": 0, "healthGrade": None}
    no_data = {**dropped, "type": "viewer.connected", "data": {"viewer": viewer}}
    assert event_line(no_data).endswith("no data")
    first = {**dropped, "data": {"viewer": viewer | {"healthScore": 20}, "threshold": 50}}
    assert event_line(first).endswith("20  below 50")  # no measurement before the drop


@pytest.mark.parametrize(
    "event",
    [None, [], "text", {}, {"type": 5, "data": "x"}, {"type": "viewer.connected", "time": "soon"}],
)
def test_an_event_of_an_unexpected_shape_still_makes_a_line(event: object) -> None:
    """Missing or odd fields print as '-', never an exception (a sink must not fail on it)."""
    line = event_line(event)
    assert line.startswith("-")
    assert "\n" not in line


def test_a_first_poll_and_wide_cluster_names() -> None:
    """initial events say the viewer was already watching; the cluster column takes a width."""
    connected = by_type("viewer.connected")
    initial = {**connected, "data": {**connected["data"], "initial": True}}
    assert event_line(initial).endswith("83 Very Good  already watching")
    wide = TextFormat(cluster_width=10).line(connected)
    assert wide[14:26] == "eu-1        "


class _Stream:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_colour_on_a_terminal_unless_no_color() -> None:
    """Colour on a terminal; not in a pipe; not when NO_COLOR is set to anything."""
    assert wants_color(_Stream(tty=True), {})
    assert wants_color(_Stream(tty=True), {"NO_COLOR": ""})
    assert not wants_color(_Stream(tty=True), {"NO_COLOR": "1"})
    assert not wants_color(_Stream(tty=False), {})
