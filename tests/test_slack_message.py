"""The Slack message of a group of events: what it says, and that Slack always takes it."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notifier.events import EVENT_TYPES, STREAM_EVENT_TYPES, VIEWER_EVENT_TYPES
from notifier.sinks.slack.message import CARD_BUDGET, MAX_CARDS, MAX_LINES, build_message
from notifier.sinks.slack.text import percent, span
from testkit.slack_validation import assert_valid_slack_payload, block_texts, units

CLUSTER = "eu-1"
DASH = "\u2013"  # the en dash of a time range
STREAM = "live-1"


def viewer(viewer_id: str = "v_xh69zeigml96ts7p", **fields: Any) -> dict[str, Any]:
    """A viewer record the way Storm returns it, with ``fields`` replaced."""
    record: dict[str, Any] = {
        "id": viewer_id,
        "state": "PUBLISHED",
        "harnessType": "STORM_MSE_VIEWER",
        "applicationId": "c_y7q39097ml5glmh6",
        "streamKey": STREAM,
        "remoteAddress": "83.11.198.11",
        "deviceType": "DESKTOP",
        "osName": "Windows 10/11",
        "browserName": "Chrome",
        "countryCode": "PL",
        "countryName": "Poland",
        "startTime": 1770279702104,
        "duration": 723_000,
        "healthScore": 95,
        "healthGrade": "Very Good",
    }
    record.update(fields)
    return record


def event(
    kind: str,
    sequence: int,
    record: dict[str, Any] | None = None,
    *,
    time: str = "2026-02-05T08:22:40.071Z",
    **data: Any,
) -> dict[str, Any]:
    """A decoded CloudEvent as storm-notifier emits it."""
    record = viewer() if record is None else record
    return {
        "specversion": "1.0",
        "id": f"id-{sequence}",
        "source": f"/clusters/{CLUSTER}",
        "type": kind,
        "subject": record.get("id"),
        "time": time,
        "datacontenttype": "application/json",
        "cluster": CLUSTER,
        "sequence": sequence,
        "data": {"viewer": record, **data},
    }


def dropped(
    sequence: int, record: dict[str, Any], before: Any = 82, grade: Any = "Very Good"
) -> dict[str, Any]:
    """A health drop from ``before``/``grade`` to the record's health, threshold 50."""
    previous = {"healthScore": before, "healthGrade": grade}
    return event("viewer.health_dropped", sequence, record, previous=previous, threshold=50)


def recovered(sequence: int, record: dict[str, Any]) -> dict[str, Any]:
    """A recovery from 35 Bad to the record's health, threshold 70."""
    previous = {"healthScore": 35, "healthGrade": "Bad"}
    return event("viewer.health_recovered", sequence, record, previous=previous, threshold=70)


def lines(payload: dict[str, Any]) -> list[str]:
    """The event lines: the section texts after the summary, one line an event."""
    sections = [block["text"]["text"] for block in payload["blocks"] if block["type"] == "section"]
    return [line for text in sections[1:] for line in text.split("\n") if not line.startswith("_…")]


def summary(payload: dict[str, Any]) -> str:
    """The counts section."""
    text: str = payload["blocks"][1]["text"]["text"]
    return text


def more_line(payload: dict[str, Any]) -> str | None:
    """The "…and N more" line, if the message was summarised."""
    texts = [text for text in block_texts(payload) if text.startswith("_…and ")]
    return texts[0] if texts else None


def parse_counts(text: str, separator: str) -> dict[str, int]:
    """``"3 joined, 1 left"`` as ``{"joined": 3, "left": 1}``; empty for "no events"."""
    if text in ("no events", "_no events_"):
        return {}
    counts = {}
    for part in text.split(separator):
        number, label = part.split(" ", 1)
        counts[label] = int(number)
    return counts


def valid(payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` after checking that Slack would accept it."""
    assert_valid_slack_payload(payload)
    return payload


@pytest.mark.parametrize(
    ("made", "count", "line"),
    [
        pytest.param(
            event("viewer.connected", 1),
            "*1 joined*",
            "🟢 `v_xh69zeigml96ts7p` joined · 🇵🇱 PL · Desktop · Chrome · 95 Very Good",
            id="connected",
        ),
        pytest.param(
            event("viewer.disconnected", 1, lastSeenAt="2026-02-05T08:22:31.000Z"),
            "*1 left*",
            "⚪ `v_xh69zeigml96ts7p` left after 12m 3s · 🇵🇱 PL · Desktop · Chrome · 95 Very Good",
            id="disconnected",
        ),
        pytest.param(
            dropped(1, viewer(healthScore=31, healthGrade="Bad", deviceType="MOBILE")),
            "*1 health dropped*",
            "🔴 `v_xh69zeigml96ts7p` health dropped 82 Very Good → 31 Bad (below 50)"
            " · 🇵🇱 PL · Mobile · Chrome",
            id="health_dropped",
        ),
        pytest.param(
            recovered(1, viewer(healthScore=78, healthGrade="Good", browserName="Safari")),
            "*1 recovered*",
            "🟡 `v_xh69zeigml96ts7p` recovered 35 Bad → 78 Good (≥ 70) · 🇵🇱 PL · Desktop · Safari",
            id="health_recovered",
        ),
    ],
)
def test_one_event_of_each_type(made: dict[str, Any], count: str, line: str) -> None:
    """One event makes a header, its count, its line and the time; the fallback says the same."""
    payload = valid(build_message(CLUSTER, STREAM, [made]))
    blocks = payload["blocks"]
    assert [block["type"] for block in blocks] == ["header", "section", "section", "context"]
    assert blocks[0]["text"] == {
        "type": "plain_text",
        "text": "eu-1 · stream live-1",
        "emoji": True,
    }
    assert summary(payload) == count
    assert lines(payload) == [line]
    assert blocks[-1]["elements"][0]["text"] == "eu-1 · 1 event · 2026-02-05 08:22:40 UTC"
    assert payload["text"] == f"eu-1 · live-1: {count.strip('*')}"


def test_mixed_group_in_sequence_order() -> None:
    """Lines follow ``sequence``, not arrival; counts keep a fixed order; the time spans all."""
    group = [
        recovered(45, viewer("v_d", healthScore=80, healthGrade="Good")),
        event("viewer.connected", 41, viewer("v_a"), time="2026-02-05T08:22:40.071Z"),
        event("viewer.disconnected", 44, viewer("v_c"), time="2026-02-05T08:22:49.900Z"),
        dropped(43, viewer("v_b", healthScore=20, healthGrade="Bad")),
        event("viewer.connected", 42, viewer("v_b"), time="2026-02-05T08:22:41.000Z"),
    ]
    payload = valid(build_message(CLUSTER, STREAM, group))
    assert [line[:1] for line in lines(payload)] == ["🟢", "🟢", "🔴", "⚪", "🟡"]
    assert [re.search(r"`(v_\w)`", line)[1] for line in lines(payload)] == [  # type: ignore[index]
        "v_a",
        "v_b",
        "v_b",
        "v_c",
        "v_d",
    ]
    assert summary(payload) == "*2 joined* · *1 left* · *1 health dropped* · *1 recovered*"
    assert payload["text"] == "eu-1 · live-1: 2 joined, 1 left, 1 health dropped, 1 recovered"
    context = payload["blocks"][-1]["elements"][0]["text"]
    assert context == f"eu-1 · 5 events · 2026-02-05 08:22:40{DASH}08:22:49 UTC"
    assert more_line(payload) is None


def test_events_without_sequence_keep_their_place_last() -> None:
    """Events without a usable ``sequence`` come after the numbered ones, in arrival order."""
    first = event("viewer.connected", 0, viewer("v_first"))
    second = event("viewer.connected", 0, viewer("v_second"))
    first["sequence"], second["sequence"] = None, "7"
    numbered = event("viewer.connected", 9, viewer("v_numbered"))
    payload = valid(build_message(CLUSTER, STREAM, [first, second, numbered]))
    assert ["v_numbered" in lines(payload)[0], "v_first" in lines(payload)[1]] == [True, True]
    assert "v_second" in lines(payload)[2]


def test_time_range_across_days_and_offsets() -> None:
    """Times with an offset are shown in UTC, with both dates when the range crosses midnight."""
    group = [
        event("viewer.connected", 1, time="2026-02-05T23:59:58.000Z"),
        event("viewer.connected", 2, time="2026-02-06T02:00:03+02:00"),
        event("viewer.connected", 3, time="not a time"),
    ]
    context = valid(build_message(CLUSTER, STREAM, group))["blocks"][-1]["elements"][0]["text"]
    assert context == f"eu-1 · 3 events · 2026-02-05 23:59:58{DASH}2026-02-06 00:00:03 UTC"


@pytest.mark.parametrize(
    ("before", "grade", "now", "now_grade", "expected"),
    [
        pytest.param(
            82, "Very Good", 31, "Bad", "health dropped 82 Very Good → 31 Bad (below 50)", id="both"
        ),
        pytest.param(
            None, None, 31, "Bad", "health dropped to 31 Bad (below 50)", id="no-previous"
        ),
        pytest.param(
            82, "Very Good", None, None, "health dropped from 82 Very Good (below 50)", id="no-now"
        ),
        pytest.param(None, None, None, None, "health dropped (below 50)", id="neither"),
        pytest.param(
            82.5, None, 12.25, "Bad", "health dropped 82.5 → 12.25 Bad (below 50)", id="floats"
        ),
        pytest.param(
            0, "No Data", 31, "Bad", "health dropped No Data → 31 Bad (below 50)", id="no-data"
        ),
    ],
)
def test_before_and_after_of_a_health_event(
    before: Any, grade: Any, now: Any, now_grade: Any, expected: str
) -> None:
    """A health line shows previous → current score and grade, leaving out what is unknown."""
    record = viewer(healthScore=now, healthGrade=now_grade)
    payload = valid(build_message(CLUSTER, STREAM, [dropped(1, record, before, grade)]))
    assert f"`v_xh69zeigml96ts7p` {expected} · 🇵🇱 PL" in lines(payload)[0]


def test_missing_and_null_fields_are_left_out() -> None:
    """Null, missing or malformed fields are skipped, never shown as None; events still count."""
    bare = dict.fromkeys(viewer()) | {"id": "v_bare"}
    group: list[dict[str, Any]] = [
        event("viewer.connected", 1, bare),
        event("viewer.connected", 2, {"id": "v_empty"}),
        {"type": "viewer.disconnected", "sequence": 3, "subject": "v_nodata"},
        {"type": "viewer.disconnected", "sequence": 4, "data": {"viewer": "oops"}},
        {
            "type": "viewer.health_dropped",
            "sequence": 5,
            "data": {"previous": None, "threshold": None},
        },
        event("viewer.connected", 6, viewer(healthScore=True, duration="long", countryCode=7)),
    ]
    payload = valid(build_message(CLUSTER, STREAM, group))
    assert lines(payload) == [
        "🟢 `v_bare` joined",
        "🟢 `v_empty` joined",
        "⚪ `v_nodata` left",
        "⚪ a viewer left",
        "🔴 a viewer health dropped",
        "🟢 `v_xh69zeigml96ts7p` joined · 7 · Desktop · Chrome · Very Good",
    ]
    assert summary(payload) == "*3 joined* · *2 left* · *1 health dropped*"
    assert not any("None" in text for text in [*block_texts(payload), payload["text"]])
    context = payload["blocks"][-1]["elements"][0]["text"]
    assert context == "eu-1 · 6 events · 2026-02-05 08:22:40 UTC"  # events without time: left out


def test_country_flags() -> None:
    """A valid ISO code gets its flag; an unknown one is shown as is; without a code, the name."""
    group = [
        event("viewer.connected", 1, viewer("v_1", countryCode="pl")),
        event("viewer.connected", 2, viewer("v_2", countryCode="XX")),
        event("viewer.connected", 3, viewer("v_3", countryCode=None, countryName="Poland")),
        event("viewer.connected", 4, viewer("v_4", countryCode="🇵🇱", countryName="Poland")),
    ]
    shown = [line.split(" · ")[1] for line in lines(valid(build_message(CLUSTER, STREAM, group)))]
    assert shown == ["🇵🇱 PL", "XX", "Poland", "🇵🇱"]


def test_thousand_events_are_summarised() -> None:
    """1,000 events: a valid message of at most 50 blocks, listing some and counting all of them."""
    kinds = ["viewer.connected"] * 700 + ["viewer.disconnected"] * 200
    kinds += ["viewer.health_dropped"] * 60 + ["viewer.health_recovered"] * 40
    group = [event(kind, n, viewer(f"v_{n:016d}")) for n, kind in enumerate(kinds)]
    payload = valid(build_message(CLUSTER, STREAM, group))
    assert len(payload["blocks"]) <= 50
    assert summary(payload) == "*700 joined* · *200 left* · *60 health dropped* · *40 recovered*"
    assert payload["text"] == "eu-1 · live-1: 700 joined, 200 left, 60 health dropped, 40 recovered"
    shown = lines(payload)
    assert len(shown) == MAX_LINES
    assert all(line.startswith("🟢") for line in shown)  # sequence order: the joins came first
    assert more_line(payload) == (
        "_…and 950 more (650 joined, 200 left, 60 health dropped, 40 recovered)_"
    )
    assert payload["blocks"][-1]["elements"][0]["text"].startswith("eu-1 · 1000 events · ")


def test_line_limit_is_a_parameter() -> None:
    """``max_lines`` caps the listed lines; the rest are counted in the "more" line."""
    group = [event("viewer.connected" if n % 2 else "viewer.disconnected", n) for n in range(10)]
    payload = valid(build_message(CLUSTER, STREAM, group, max_lines=3))
    assert len(lines(payload)) == 3
    assert more_line(payload) == "_…and 7 more (4 joined, 3 left)_"
    for nothing in (0, -1):
        payload = valid(build_message(CLUSTER, STREAM, group, max_lines=nothing))
        assert lines(payload) == []
        assert more_line(payload) == "_…and 10 more (5 joined, 5 left)_"


def test_long_lines_fill_several_sections_within_the_total() -> None:
    """Lines of long values are packed into several sections, all inside Slack's total."""
    long = "W" * 500
    group = [
        event(
            "viewer.connected",
            n,
            viewer(
                f"v_{n}{long}",
                browserName=long,
                countryName=long,
                countryCode=long,
                deviceType=long,
                healthGrade=long,
            ),
        )
        for n in range(200)
    ]
    payload = valid(build_message(CLUSTER, STREAM, group, max_lines=1000))
    sections = [block for block in payload["blocks"] if block["type"] == "section"]
    assert len(sections) > 3
    shown = lines(payload)
    assert 10 < len(shown) < 200
    assert more_line(payload) == f"_…and {200 - len(shown)} more ({200 - len(shown)} joined)_"
    assert sum(units(text) for text in block_texts(payload)) <= 10_000


def test_very_long_values_are_cut() -> None:
    """A 10,000-character stream key or browser name is cut with "…" and the message stays valid."""
    huge = "k" * 10_000
    record = viewer(streamKey=huge, browserName="B" * 10_000, healthGrade="G" * 10_000)
    payload = valid(build_message(CLUSTER, huge, [event("viewer.connected", 1, record)]))
    header = payload["blocks"][0]["text"]["text"]
    assert header.startswith("eu-1 · stream kkk")
    assert header.endswith("…")
    assert units(header) <= 150
    assert "B" * 39 + "…" in lines(payload)[0]
    assert units(lines(payload)[0]) < 300
    assert units(payload["text"]) < 200


def test_api_values_are_escaped_and_kept_on_one_line() -> None:
    """``& < >`` are escaped and control characters dropped: no injected markup or mentions."""
    evil = "<script>&</script>\n<!channel>\r\nx\x00\x1b\u0085y"
    record = viewer(
        "v_<b>&`x`", browserName=evil, deviceType="Tab\nlet", osName=evil, countryName=evil
    )
    record["countryCode"] = None
    group = [event("viewer.connected", 1, record), event("viewer.connected", 2, viewer("v_2"))]
    payload = valid(build_message(CLUSTER, "s<&>\n1", group))
    assert payload["blocks"][0]["text"]["text"] == "eu-1 · stream s&lt;&amp;&gt; 1"
    first = lines(payload)[0]
    assert first.startswith("🟢 `v_&lt;b&gt;&amp;'x'` joined · ")
    assert " · &lt;script&gt;&amp;&lt;/script&gt; &lt;!channel&gt; x y · Tab let · " in first
    assert " · Tab let · " in first
    assert len(lines(payload)) == 2
    assert payload["text"] == "eu-1 · s&lt;&amp;&gt; 1: 2 joined"


def test_weird_unicode_is_cleaned_but_emoji_survive() -> None:
    """Bidi overrides, lone surrogates and separators go; emoji, joiners and accents stay."""
    family = "👨\u200d👩\u200d👧"
    record = viewer(browserName=f"\u202eevil\u2028{family} Café\ud800", healthGrade="Zły")
    payload = valid(build_message(CLUSTER, "strumień-ł", [event("viewer.connected", 1, record)]))
    assert f" · evil {family} Café · 95 Zły" in lines(payload)[0]
    assert payload["blocks"][0]["text"]["text"] == "eu-1 · stream strumień-ł"


def test_unknown_event_types_are_shown_generically() -> None:
    """An unknown, missing or odd type gets a generic line and its own count, without crashing."""
    group: list[dict[str, Any]] = [
        event("viewer.teleported", 1),
        event("viewer.connected", 2),
        event("viewer.teleported", 3),
        {**event("x", 4), "type": None},
        {**event("x", 5), "type": 42},
    ]
    payload = valid(build_message(CLUSTER, STREAM, group))
    assert summary(payload) == "*1 joined* · *2 viewer.teleported* · *1 42* · *1 unknown event*"
    assert lines(payload)[0] == (
        "🔹 `v_xh69zeigml96ts7p` viewer.teleported · 🇵🇱 PL · Desktop · Chrome · 95 Very Good"
    )
    assert payload["text"] == "eu-1 · live-1: 1 joined, 2 viewer.teleported, 1 42, 1 unknown event"


def test_many_unknown_types_are_folded_into_other() -> None:
    """Beyond three unknown types, the counts say "N other" instead of naming every one."""
    group = [event(f"viewer.kind_{n % 30}", n) for n in range(300)]
    group += [event("viewer.disconnected", 300)]
    payload = valid(build_message(CLUSTER, STREAM, group))
    assert summary(payload) == (
        "*1 left* · *10 viewer.kind_0* · *10 viewer.kind_1* · *10 viewer.kind_10* · *270 other*"
    )


def test_no_events_is_still_a_valid_message() -> None:
    """An empty group (never sent by the sink) still gives a message Slack takes."""
    payload = valid(build_message(CLUSTER, None, []))
    assert payload["text"] == "eu-1: no events"
    assert payload["blocks"][0]["text"]["text"] == "eu-1 · no stream key"


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        pytest.param(lambda p: p.update(blocks=p["blocks"] * 13), "blocks", id="51-blocks"),
        pytest.param(
            lambda p: p["blocks"][0]["text"].update(text="h" * 151), "151", id="long-header"
        ),
        pytest.param(
            lambda p: p["blocks"][1]["text"].update(text="s" * 3001), "3001", id="long-section"
        ),
        pytest.param(lambda p: p["blocks"][1]["text"].update(text="a <b>"), "'<'", id="raw-angle"),
        pytest.param(
            lambda p: p["blocks"][1]["text"].update(text="a & b"), "'&'", id="raw-ampersand"
        ),
        pytest.param(
            lambda p: p["blocks"][1]["text"].update(text="a\ud800"), "JSON", id="surrogate"
        ),
        pytest.param(lambda p: p["blocks"][1]["text"].update(text=" "), "empty", id="blank"),
        pytest.param(
            lambda p: p["blocks"][0]["text"].update(type="mrkdwn"), "type", id="mrkdwn-header"
        ),
        pytest.param(lambda p: p["blocks"][1].update(bogus=1), "unknown keys", id="unknown-key"),
        pytest.param(lambda p: p["blocks"].append({"type": "video"}), "video", id="unknown-block"),
        pytest.param(lambda p: p.update(text="t" * 3001), "3001", id="long-fallback"),
        pytest.param(lambda p: p.pop("text"), "fallback", id="no-fallback"),
        pytest.param(
            lambda p: p["blocks"][-1].update(elements=p["blocks"][-1]["elements"] * 11),
            "11 elements",
            id="context-elements",
        ),
        pytest.param(
            lambda p: p["blocks"].extend(
                {"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3000}}
                for _ in range(5)
            ),
            "msg_blocks_too_long",
            id="too-much-in-all",
        ),
        pytest.param(
            lambda p: p["blocks"].append(
                {"type": "section", "fields": [{"type": "mrkdwn", "text": "f"}] * 11}
            ),
            "11 fields",
            id="eleven-fields",
        ),
    ],
)
def test_the_validator_rejects_what_slack_rejects(change: Any, problem: str) -> None:
    """The independent check catches each limit being broken, so a pass means something."""
    payload = build_message(CLUSTER, STREAM, [event("viewer.connected", 1)])
    assert_valid_slack_payload(payload)
    change(payload)
    with pytest.raises(AssertionError, match=re.escape(problem)):
        assert_valid_slack_payload(payload)


_TEXT = st.text(max_size=60) | st.text(max_size=3000) | st.just("<&>`*_~\n")
_VALUE = st.none() | _TEXT | st.integers() | st.floats() | st.booleans() | st.lists(st.integers())
_VIEWERS = st.fixed_dictionaries(
    {}, optional=dict.fromkeys(viewer(), _VALUE)
) | st.fixed_dictionaries(
    {},
    optional={
        "countryCode": st.sampled_from(["PL", "de", "XX", "", "P", "PLN"]),
        "healthScore": st.integers(0, 100) | st.floats(0, 100),
        "healthGrade": st.sampled_from(["Very Good", "Good", "Bad", "No Data"]),
        "duration": st.integers(-1, 10**12),
    },
)
_FIGURE = _VALUE | st.integers(0, 10**7) | st.floats(0, 1)
_ROW = st.fixed_dictionaries({}, optional=dict.fromkeys(("value", "viewers", "dropped"), _FIGURE))
_STREAM_DATA = {
    "stream": st.fixed_dictionaries({}, optional={"applicationId": _VALUE, "streamKey": _VALUE})
    | _VALUE,
    **dict.fromkeys(
        ("viewers", "measured", "dropped", "share", "peakViewers", "direction", "initial"), _FIGURE
    ),
    "breakdown": st.fixed_dictionaries(
        {},
        optional=dict.fromkeys(
            ("countryCode", "harnessType", "deviceType"), st.lists(_ROW | _VALUE, max_size=8)
        ),
    )
    | _VALUE,
    "incident": st.fixed_dictionaries(
        {}, optional=dict.fromkeys(("since", "durationMs", "peakDropped", "peakShare"), _FIGURE)
    )
    | _VALUE,
    "summary": st.fixed_dictionaries(
        {},
        optional=dict.fromkeys(
            ("startedAt", "durationMs", "peakViewers", "peakAt", "sessions", "degradedMs"),
            _FIGURE,
        )
        | {"endedDegraded": st.booleans() | _VALUE},
    )
    | _VALUE,
}
_EVENTS = st.fixed_dictionaries(
    {"type": st.sampled_from(EVENT_TYPES) | _VALUE},
    optional={
        "subject": _VALUE,
        "sequence": _VALUE,
        "time": st.datetimes().map(lambda moment: moment.isoformat() + "Z") | _VALUE,
        "cluster": _VALUE,
        "data": st.fixed_dictionaries(
            {},
            optional={
                "viewer": _VIEWERS | _VALUE,
                "previous": st.fixed_dictionaries(
                    {}, optional={"healthScore": _VALUE, "healthGrade": _VALUE}
                )
                | _VALUE,
                "threshold": _VALUE,
                "lastSeenAt": _VALUE,
                **_STREAM_DATA,
            },
        )
        | _VALUE,
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cluster=st.from_regex(r"[a-z0-9_-]{1,40}", fullmatch=True) | st.text(max_size=200),
    stream_key=st.none() | st.text(max_size=500),
    events=st.lists(_EVENTS, max_size=40),
    max_lines=st.integers(1, 200),
)
def test_any_group_makes_a_valid_message(
    cluster: str, stream_key: str | None, events: list[dict[str, Any]], max_lines: int
) -> None:
    """Whatever the events hold (any types, fields, values, unicode), Slack takes the message."""
    assert_valid_slack_payload(build_message(cluster, stream_key, events, max_lines=max_lines))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kinds=st.lists(st.sampled_from(VIEWER_EVENT_TYPES), max_size=400),
    name=st.text(max_size=300),
    max_lines=st.integers(1, 100),
)
def test_every_event_is_counted_once(kinds: list[str], name: str, max_lines: int) -> None:
    """Listed lines plus the "more" count always add up to the group; the summary counts all."""
    group = [
        event(kind, n, viewer(f"v_{n}", browserName=name, countryName=name))
        for n, kind in enumerate(kinds)
    ]
    payload = valid(build_message(CLUSTER, name or None, group, max_lines=max_lines))
    labels = {
        "viewer.connected": "joined",
        "viewer.disconnected": "left",
        "viewer.health_dropped": "health dropped",
        "viewer.health_recovered": "recovered",
    }
    total = {labels[kind]: n for kind, n in Counter(kinds).items()}
    shown = Counter(
        labels[kind] for kind, n in zip(kinds, range(len(lines(payload))), strict=False)
    )
    hidden = {label: total[label] - shown[label] for label in total if total[label] > shown[label]}
    assert parse_counts(summary(payload).replace("*", ""), " · ") == total
    assert parse_counts(payload["text"].rsplit(": ", 1)[1], ", ") == total
    more = more_line(payload)
    if hidden:
        assert more is not None
        assert more.startswith(f"_…and {sum(hidden.values())} more (")
        assert parse_counts(more.split(" more (", 1)[1].removesuffix(")_"), ", ") == hidden
    else:
        assert more is None


# --- stream events -----------------------------------------------------------------------------

APP = "c_41pjso2krv6sk1wj"
BREAKDOWN = {
    "countryCode": [
        {"value": "PL", "viewers": 6000, "dropped": 2100},
        {"value": "DE", "viewers": 3000, "dropped": 600},
        {"value": None, "viewers": 2000, "dropped": 270},
    ],
    "harnessType": [{"value": "STORM_HLS_VIEWER", "viewers": 7000, "dropped": 2500}],
    "deviceType": [{"value": "MOBILE", "viewers": 5000, "dropped": 2000}],
}
INCIDENT = {
    "since": "2026-02-05T06:17:40.071Z",
    "durationMs": 7_500_000,
    "peakDropped": 3100,
    "peakShare": 0.2818,
}
SUMMARY = {
    "startedAt": "2026-02-05T06:17:10.071Z",
    "durationMs": 7_530_000,
    "peakViewers": 11240,
    "peakAt": "2026-02-05T07:22:40.071Z",
    "sessions": 18342,
    "degradedMs": 7_500_000,
    "endedDegraded": False,
}
DEGRADED: dict[str, Any] = {"viewers": 11000, "measured": 11000, "dropped": 2970, "share": 0.27}
RECOVERED: dict[str, Any] = {"viewers": 10800, "measured": 10750, "dropped": 430, "share": 0.04}
WHERE = f"`{APP} / {STREAM}` · 08:22:40 UTC"


def stream_event(kind: str, sequence: int, *, key: str = STREAM, **data: Any) -> dict[str, Any]:
    """A decoded stream event as storm-notifier emits it: subject the streamKey."""
    return {
        "specversion": "1.0",
        "id": f"id-{sequence}",
        "source": f"/clusters/{CLUSTER}",
        "type": kind,
        "subject": key,
        "time": "2026-02-05T08:22:40.071Z",
        "datacontenttype": "application/json",
        "cluster": CLUSTER,
        "sequence": sequence,
        "data": {"stream": {"applicationId": APP, "streamKey": key}, **data},
    }


def section_texts(payload: dict[str, Any]) -> list[str]:
    """The text of every section, in order."""
    return [block["text"]["text"] for block in payload["blocks"] if block["type"] == "section"]


TABLE = (
    "```\n"
    "country           viewers  dropped\n"
    "PL                  6,000    2,100\n"
    "DE                  3,000      600\n"
    "(none)              2,000      270\n"
    "\n"
    "harness           viewers  dropped\n"
    "STORM_HLS_VIEWER    7,000    2,500\n"
    "\n"
    "device            viewers  dropped\n"
    "MOBILE              5,000    2,000\n"
    "```"
)


@pytest.mark.parametrize(
    ("made", "card", "text"),
    [
        pytest.param(
            stream_event("stream.audience_started", 1, viewers=1),
            f"▶️ *live-1 audience started*: 1 viewer\n{WHERE}",
            "eu-1 · live-1 audience started: 1 viewer",
            id="started",
        ),
        pytest.param(
            stream_event("stream.audience_started", 1, viewers=1204, initial=True),
            "▶️ *live-1 audience started*: 1,204 viewers (already live when the notifier"
            f" started)\n{WHERE}",
            "eu-1 · live-1 audience started: 1,204 viewers (already live when the notifier"
            " started)",
            id="started-initial",
        ),
        pytest.param(
            stream_event(
                "stream.audience_crossed", 1, threshold=10000, direction="up", viewers=10012,
                peakViewers=10012,
            ),
            f"📈 *live-1 reached 10,000 viewers*: 10,012 now, peak 10,012\n{WHERE}",
            "eu-1 · live-1 reached 10,000 viewers: 10,012 now, peak 10,012",
            id="crossed-up",
        ),
        pytest.param(
            stream_event(
                "stream.audience_crossed", 1, threshold=10000, direction="down", viewers=8950,
                peakViewers=11240,
            ),
            f"📉 *live-1 fell below 10,000 viewers*: 8,950 now, peak 11,240\n{WHERE}",
            "eu-1 · live-1 fell below 10,000 viewers: 8,950 now, peak 11,240",
            id="crossed-down",
        ),
        pytest.param(
            stream_event("stream.health_degraded", 1, **DEGRADED, breakdown=BREAKDOWN),
            "🚨 *live-1 degraded*: 27% of 11,000 viewers dropped (2,970)\n"
            f"{WHERE}\n11,000 viewers · 11,000 measured · 2,970 dropped (27%)\n{TABLE}",
            "eu-1 · live-1 degraded: 27% of 11,000 viewers dropped (2,970)",
            id="degraded",
        ),
        pytest.param(
            stream_event(
                "stream.health_recovered", 1, **RECOVERED, breakdown=BREAKDOWN, incident=INCIDENT
            ),
            "✅ *live-1 recovered after 2 h 5 min*: 4% of 10,750 measured viewers dropped (430)"
            f"\n{WHERE}\n10,800 viewers · 10,750 measured · 430 dropped (4%)\n"
            "Incident: since 06:17:40 UTC · peak 3,100 dropped (28%)",
            "eu-1 · live-1 recovered after 2 h 5 min: 4% of 10,750 measured viewers dropped (430)",
            id="recovered",
        ),
        pytest.param(
            stream_event("stream.audience_ended", 1, summary=SUMMARY),
            f"⏹️ *live-1 audience ended after 2 h 5 min*: peak 11,240 viewers\n{WHERE}\n"
            "Started 06:17:10 UTC · peak 11,240 at 07:22:40 UTC · 18,342 sessions"
            " · degraded 2 h 5 min in all",
            "eu-1 · live-1 audience ended after 2 h 5 min: peak 11,240 viewers",
            id="ended",
        ),
        pytest.param(
            stream_event(
                "stream.audience_ended", 1,
                summary=SUMMARY | {"endedDegraded": True, "degradedMs": 0, "durationMs": 40_000,
                                   "startedAt": "2026-02-04T23:59:59.000Z"},
            ),
            f"⏹️ *live-1 audience ended while degraded after 40 s*: peak 11,240 viewers\n{WHERE}"
            "\nStarted 2026-02-04 23:59:59 UTC · peak 11,240 at 07:22:40 UTC · 18,342 sessions",
            "eu-1 · live-1 audience ended while degraded after 40 s: peak 11,240 viewers",
            id="ended-degraded-other-day",
        ),
    ],
)  # fmt: skip
def test_one_stream_event_of_each_type(made: dict[str, Any], card: str, text: str) -> None:
    """A stream event is one card under the header: what happened to which stream with its
    figures, where and when, a degradation's breakdown as a table; the fallback leads with it."""
    payload = valid(build_message(CLUSTER, STREAM, [made]))
    assert [block["type"] for block in payload["blocks"]] == ["header", "section", "context"]
    assert payload["blocks"][0]["text"]["text"] == "eu-1 · stream live-1"
    assert section_texts(payload) == [card]
    assert payload["blocks"][-1]["elements"][0]["text"] == (
        "eu-1 · 1 event · 2026-02-05 08:22:40 UTC"
    )
    assert payload["text"] == text


def test_stream_events_come_first_and_the_viewer_digest_still_works() -> None:
    """A stream's events and its viewers' events in one message: the cards in sequence order,
    a divider, then the viewer counts and lines as before; the fallback tells both."""
    group = [
        dropped(2, viewer("v_b", healthScore=20, healthGrade="Bad")),
        stream_event("stream.health_degraded", 4, **DEGRADED, breakdown=BREAKDOWN),
        event("viewer.connected", 1, viewer("v_a")),
        stream_event("stream.audience_started", 3, viewers=2),
    ]
    payload = valid(build_message(CLUSTER, STREAM, group))
    kinds = [block["type"] for block in payload["blocks"]]
    assert kinds == ["header", "section", "section", "divider", "section", "section", "context"]
    texts = section_texts(payload)
    assert texts[0].startswith("▶️ *live-1 audience started*")
    assert texts[1].startswith("🚨 *live-1 degraded*")
    assert texts[2] == "*1 joined* · *1 health dropped*"
    assert texts[3].split("\n")[0].startswith("🟢 `v_a` joined")
    assert texts[3].split("\n")[1].startswith("🔴 `v_b` health dropped")
    assert payload["text"] == (
        "eu-1 · live-1 audience started: 2 viewers; live-1 degraded: 27% of 11,000 viewers"
        " dropped (2,970); 1 joined, 1 health dropped"
    )
    assert payload["blocks"][-1]["elements"][0]["text"].startswith("eu-1 · 4 events · ")


def test_a_group_without_a_stream_key_takes_it_from_its_stream_events() -> None:
    """With no key given (an event decoded without one), the header names the stream anyway."""
    payload = valid(build_message(CLUSTER, None, [stream_event("stream.audience_started", 1)]))
    assert payload["blocks"][0]["text"]["text"] == "eu-1 · stream live-1"
    assert payload["text"] == "eu-1 · live-1 audience started"


def test_stream_values_are_escaped_once() -> None:
    """A hostile streamKey or applicationId is escaped, once, in the card and the fallback."""
    made = stream_event("stream.audience_started", 1, key="s<&>\n1", viewers=2)
    made["data"]["stream"]["applicationId"] = "a`<b>`"
    payload = valid(build_message(CLUSTER, "s<&>\n1", [made]))
    assert section_texts(payload)[0] == (
        "▶️ *s&lt;&amp;&gt; 1 audience started*: 2 viewers\n"
        "`a'&lt;b&gt;' / s&lt;&amp;&gt; 1` · 08:22:40 UTC"
    )
    assert payload["text"] == "eu-1 · s&lt;&amp;&gt; 1 audience started: 2 viewers"


def test_many_stream_events_are_capped_and_counted() -> None:
    """40 flapping degradations and recoveries: MAX_CARDS cards within CARD_BUDGET, only the
    newest degradation shown with its table, the rest counted; the fallback tells three."""
    group = [
        stream_event("stream.health_degraded", n, **DEGRADED, breakdown=BREAKDOWN)
        if n % 2 == 0
        else stream_event(
            "stream.health_recovered", n, **RECOVERED, breakdown=BREAKDOWN, incident=INCIDENT
        )
        for n in range(40)
    ]
    group.append(event("viewer.connected", 40))
    payload = valid(build_message(CLUSTER, STREAM, group))
    texts = section_texts(payload)
    cards = [text for text in texts if text.startswith(("🚨", "✅"))]
    assert len(cards) == MAX_CARDS
    assert sum(units(text) for text in cards) <= CARD_BUDGET
    assert ["```" in text for text in cards] == [n == 8 for n in range(MAX_CARDS)]
    assert texts[len(cards)] == "_…and 30 more stream events (15 degraded, 15 recovered)_"
    assert texts[len(cards) + 1] == "*1 joined*"
    assert payload["text"].count("; ") == 4  # three told, "37 more stream events", the counts
    assert "; 37 more stream events; 1 joined" in payload["text"]


def test_breakdown_values_are_cut_escaped_and_aligned() -> None:
    """A long or hostile breakdown value is cut to 18 characters and escaped; the columns stay
    aligned (as the reader sees them); more than five rows are left out; bad rows are skipped."""
    rows: list[Any] = [{"value": "<script>&" + "x" * 30, "viewers": 12, "dropped": 1_000_000}]
    rows += [{"value": f"R{n}", "viewers": n, "dropped": n} for n in range(6)]
    rows += ["oops", {"value": "no counts"}]
    made = stream_event(
        "stream.health_degraded", 1, **DEGRADED, breakdown={"countryCode": rows, "deviceType": 5}
    )
    card = section_texts(valid(build_message(CLUSTER, STREAM, [made])))[0]
    table = card.split("```\n")[1].removesuffix("\n```").split("\n")
    assert table[0] == "country             viewers    dropped"
    assert table[1] == "&lt;script&gt;&amp;xxxxxxxx…       12  1,000,000"
    assert [line.split()[0] for line in table[2:]] == ["R0", "R1", "R2", "R3"]
    shown = table[1].replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    assert len({len(line) for line in [shown, *table[2:]]}) == 1


def test_missing_or_malformed_stream_figures_are_left_out() -> None:
    """A stream event with no or odd figures still makes a card, never "None" or "nan"."""
    group: list[dict[str, Any]] = [
        {"type": "stream.health_degraded", "sequence": 1, "subject": "s1"},
        {
            "type": "stream.audience_crossed",
            "sequence": 2,
            "data": {"stream": "x", "threshold": None, "viewers": -3, "direction": 7},
        },
        stream_event("stream.health_recovered", 3, share=float("nan"), incident={"since": 5}),
        stream_event("stream.audience_ended", 4, summary={"durationMs": 10**20, "sessions": 1.5}),
        stream_event("stream.teleported", 5),
    ]
    payload = valid(build_message(CLUSTER, STREAM, group))
    assert [text.split("\n")[0] for text in section_texts(payload)] == [
        "🚨 *s1 degraded*",
        "📈 *live-1 crossed a threshold*",
        "✅ *live-1 recovered*",
        "⏹️ *live-1 audience ended*",
        "🔹 *live-1 stream.teleported*",
    ]
    words = " ".join([*block_texts(payload), payload["text"]])
    assert not re.search(r"None|nan|inf|\?\?", words)


@pytest.mark.parametrize(
    ("ms", "told"),
    [
        (0, "0 s"),
        (40_999, "40 s"),
        (200_000, "3 min 20 s"),
        (300_000, "5 min"),
        (7_200_000, "2 h"),
        (7_500_000, "2 h 5 min"),
        (273_600_000, "3 d 4 h"),
        (-1, ""),
        (True, ""),
        (1.5, ""),
        ("1000", ""),
        (10**20, ""),
    ],
)
def test_durations_read_like_a_person_says_them(ms: object, told: str) -> None:
    """Milliseconds as "2 h 5 min": two units at most; nothing for what is not a duration."""
    assert span(ms) == told


@pytest.mark.parametrize(
    ("share", "told"),
    [
        (0, "0%"),
        (0.27, "27%"),
        (0.2818, "28%"),
        (0.004, "0.4%"),
        (1, "100%"),
        (1.5, ""),
        (None, ""),
    ],
)
def test_shares_read_as_percentages(share: object, told: str) -> None:
    """A share as a whole percentage, one decimal under 1%; nothing for what is not a share."""
    assert percent(share) == told


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kinds=st.lists(st.sampled_from(EVENT_TYPES), max_size=120),
    key=st.text(max_size=300),
)
def test_every_stream_event_is_a_card_or_counted(kinds: list[str], key: str) -> None:
    """Stream events among viewer events: each is a card or counted in the "more stream events"
    line, never both, never lost; the viewer counts count the viewer events only."""
    group = [
        stream_event(kind, n, key=key, **DEGRADED, breakdown=BREAKDOWN, incident=INCIDENT,
                     summary=SUMMARY, threshold=100, direction="up", peakViewers=5)
        if kind in STREAM_EVENT_TYPES
        else event(kind, n, viewer(f"v_{n}"))
        for n, kind in enumerate(kinds)
    ]  # fmt: skip
    payload = valid(build_message(CLUSTER, key or None, group))
    streams = sum(kind in STREAM_EVENT_TYPES for kind in kinds)
    cards = [text for text in section_texts(payload) if text[:1] in "▶📈📉🚨✅⏹"]
    more = [text for text in section_texts(payload) if " more stream event" in text]
    hidden = int(more[0].split(" ")[1]) if more else 0
    assert len(cards) + hidden == streams
    assert len(cards) <= MAX_CARDS
    assert sum(units(text) for text in cards) <= CARD_BUDGET
    viewers = len(kinds) - streams
    if viewers:
        tally = section_texts(payload)[len(cards) + len(more)]
        assert sum(parse_counts(tally.replace("*", ""), " · ").values()) == viewers
