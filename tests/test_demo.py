"""`notifier demo`: the whole pipeline with nothing set up, stopping by itself."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import sys
from typing import Any

import pytest
from rich.console import Console

from notifier.commands.demo import run_demo
from notifier.commands.demo_feed import detail
from notifier.commands.demo_view import Figures, LiveView

RECORD = {"id": "v_tnhfdb57dtycrrja", "streamKey": "live-1", "countryCode": "IT",
          "deviceType": "DESKTOP", "healthScore": 83, "healthGrade": "Very Good"}  # fmt: skip
STREAM = {"applicationId": "c_41pjso2krv6sk1wj", "streamKey": "live-1"}
AT = "2026-02-05T08:22:40.071Z"
SCREEN = (80, 24)
PROMPT = 1  # the shell prompt that follows the demo on the same screen
SUMMARY = (
    r"demo finished after \d+ s: ([\d,]+) events \(.+\); ([\d,]+) webhooks verified, 0 rejected\."
)


def _terminal() -> Console:
    """An 80x24 terminal that records what is drawn on it, set up as the demo's own console
    (``soft_wrap``: a line rich does not wrap itself stays one line here, longer than 80)."""
    width, height = SCREEN
    return Console(
        width=width,
        height=height,
        record=True,
        force_terminal=True,
        soft_wrap=True,
        color_system=None,
        file=io.StringIO(),
    )


def _last_screen(console: Console) -> list[str]:
    """The last frame and the closing lines, as they stand on the terminal at the end (the
    recording holds every frame one after the other)."""
    text = console.export_text()
    return text[text.rindex("╭") :].splitlines()


def _event(kind: str, data: dict[str, Any], n: int = 0) -> dict[str, Any]:
    subject = RECORD["id"] if kind.startswith("viewer.") else "live-1"
    return {"type": kind, "time": AT, "subject": subject, "sequence": n, "data": data}


def _busy_view(console: Console) -> LiveView:
    """A view after an hour of a big audience: every event type, five-digit counters."""
    view = LiveView(console, title="storm-notifier demo · http://127.0.0.1:41234 · embedded Redis")
    datas: list[tuple[str, dict[str, Any]]] = [
        ("viewer.connected", {"viewer": RECORD, "initial": True}),
        ("viewer.health_dropped", {"viewer": RECORD, "previous": {"healthScore": 88}}),
        ("stream.audience_started", {"stream": STREAM, "viewers": 1}),
        ("stream.audience_crossed", {"stream": STREAM, "threshold": 1000, "direction": "up",
                                     "viewers": 1002, "peakViewers": 1002}),
        ("stream.health_degraded", {"stream": STREAM, "viewers": 1100, "measured": 1100,
                                    "dropped": 297, "share": 0.27, "breakdown": {}}),
        ("stream.health_recovered", {"stream": STREAM, "viewers": 1000, "measured": 1000,
                                     "dropped": 40, "share": 0.04, "breakdown": {},
                                     "incident": {"durationMs": 7_500_000}}),
        ("stream.audience_ended", {"stream": STREAM, "summary": {"durationMs": 7_530_000,
                                   "peakViewers": 1204, "endedDegraded": True}}),
        ("viewer.disconnected", {"viewer": RECORD, "lastSeenAt": AT}),
    ]  # fmt: skip
    datas += [("viewer.connected", {"viewer": RECORD})] * 30
    for n, (kind, data) in enumerate(datas):
        view.add(_event(kind, data, n))
    for kind in ("viewer.connected", "viewer.disconnected", "viewer.health_dropped"):
        view.counts[kind] += 98_765
    return view


def test_the_last_frame_and_the_summary_fit_80x24() -> None:
    """The last frame, its closing line and a prompt fit an 80x24 terminal, title included;
    the latest stream events stay on top of the feed with their figures."""
    console = _terminal()
    view = _busy_view(console)
    figures = Figures(elapsed=3600, tracked=98_765, commits=3600, verified=296_333, retried=12)
    console.print(view.render(figures, finished=True))
    closing = view.closing(figures)
    for line in closing:
        console.print(line, highlight=False, soft_wrap=False)  # as the demo does
    screen = console.export_text().splitlines()
    assert len(screen) + PROMPT <= SCREEN[1], "\n".join(screen)
    assert max(len(line) for line in screen) <= SCREEN[0]
    text = "\n".join(screen)
    assert screen[0].startswith("╭")
    assert "storm-notifier demo · http://127.0.0.1:41234" in screen[0]
    assert "finished" in next(line for line in screen if line.startswith("╰"))
    assert re.search(r"viewers tracked +98,765 ", text)
    assert "■ ended degraded" in screen[8]  # the newest stream event, under the feed's heading
    assert "▶ stream started" not in text  # the fifth newest
    assert re.search(r"audience started +1 ", text)
    for shown in ("↗ reached 1,000", "1,002 viewers, peak 1,002",
                  "✖ degraded", "27% dropped (297/1,100)", "4% dropped after 2 h 5 min",
                  "■ ended degraded", "after 2 h 5 min, peak 1,204", "live streams",
                  "stream degraded", "● joined"):  # fmt: skip
        assert shown in text, shown


def test_the_summary_is_a_punctuated_sentence() -> None:
    """The closing line says how long it ran and counts the events by type, in the counters'
    order, in a sentence with its punctuation."""
    view = LiveView(_terminal(), title="t")
    for kind in ("viewer.disconnected", "viewer.connected", "viewer.connected"):
        view.add(_event(kind, {"viewer": RECORD}))
    figures = Figures(elapsed=75.4, verified=1234, rejected=1)
    assert view.summary(figures) == (
        "demo finished after 1 min 15 s: 3 events (2 joined, 1 left);"
        " 1,234 webhooks verified, 1 rejected."
    )
    empty = LiveView(_terminal(), title="t").summary(Figures(elapsed=2))
    assert empty == "demo finished after 2 s: 0 events; 0 webhooks verified, 0 rejected."


def test_a_health_change_shows_only_the_scores_it_knows() -> None:
    """A drop seen on a viewer's first poll has no score before it: the feed shows the score
    now (not "? → 40"); after a known score it shows the change, health before the place."""
    first = {"viewer": {**RECORD, "healthScore": 40, "healthGrade": "Poor"},
             "previous": {"healthScore": None, "healthGrade": None}, "threshold": 50}  # fmt: skip
    assert detail(_event("viewer.health_dropped", first)) == "live-1 · 40 Poor · IT desktop"
    later = {**first, "previous": {"healthScore": 88.0, "healthGrade": "Very Good"}}
    assert detail(_event("viewer.health_dropped", later)) == "live-1 · 88 → 40 Poor · IT desktop"


def test_the_live_view_shows_the_slack_channel_as_slack_would_within_80x24() -> None:
    """With --slack the feed is the channel's incident message: header, figures and its
    replies; a long breakdown table is cut first; frame and closing lines fit 80x24."""
    import msgspec  # noqa: PLC0415

    from notifier.commands.demo_slack import LocalSlack, _Message  # noqa: PLC0415
    from notifier.sinks.slack.book import IncidentRecord, compact  # noqa: PLC0415
    from notifier.sinks.slack.incidents import incident_message  # noqa: PLC0415
    from testkit.stories import Story  # noqa: PLC0415

    story = Story()
    opened = compact(msgspec.json.decode(story.degraded("live-1")["body"]))
    record = IncidentRecord(incident="i", opened=opened, ts="1.1", dropped=12, recovered=5)
    message = incident_message("demo", record)
    slack = LocalSlack()
    slack.messages["1.1"] = _Message("1.1", None, message["text"], message["blocks"], 2, ["2.2"])
    console = _terminal()
    view = LiveView(console, title="storm-notifier demo · http://127.0.0.1:41234", slack=slack)
    figures = Figures(elapsed=45, tracked=150, verified=700)
    console.print(view.render(figures, finished=True))
    closing = view.closing(figures)
    for line in closing:
        console.print(line, highlight=False, soft_wrap=False)  # as the demo does
    screen = console.export_text().splitlines()
    assert len(screen) + PROMPT <= SCREEN[1], "\n".join(screen)
    assert max(len(line) for line in screen) <= SCREEN[0]
    text = "\n".join(screen)
    shown = (
        "storm-notifier demo",
        "#incidents on a local Slack · 1 message",
        "🚨 Incident · live-1 · demo",
        "live-1 degraded: 30% of 100 viewers dropped (30)",
        "💬 1 reply · edited 2x",
    )
    for said in shown:
        assert said in text, said
    assert closing[-1].startswith("slack: 1 messages (1 incidents, 1 edited), 1 thread replies")
    assert closing[-1].endswith("”.")


@pytest.mark.timeout(60)
async def test_the_live_demo_ends_on_a_whole_frame_with_the_tracked_viewers() -> None:
    """In-process on an 80x24 terminal: the last frame, drawn once the service stopped, still
    shows the viewers tracked and the polls committed; it and the summary fit the screen."""
    console = _terminal()
    stop = asyncio.Event()
    status = await run_demo(duration=3, viewers=40, seed=3, stop=stop, console=console, live=True)
    assert status == 0
    screen = _last_screen(console)
    assert len(screen) + PROMPT <= SCREEN[1], "\n".join(screen)
    assert max(len(line) for line in screen) <= SCREEN[0], "\n".join(screen)
    text = "\n".join(screen)
    assert screen[0].startswith("╭─")
    assert "storm-notifier demo · http://127.0.0.1:" in screen[0]
    assert "finished" in next(line for line in screen if line.startswith("╰"))
    tracked = re.search(r"viewers tracked +([\d,]+) ", text)
    commits = re.search(r"polls committed +([\d,]+) ", text)
    assert tracked is not None, text
    assert int(tracked.group(1).replace(",", "")) >= 30, text
    assert commits is not None, text
    assert int(commits.group(1)) >= 1, text
    start = next(n for n, line in enumerate(screen) if line.startswith("demo finished"))
    summary = " ".join(line.strip() for line in screen[start:])
    assert re.fullmatch(SUMMARY, summary), summary


@pytest.mark.timeout(90)
async def test_demo_shows_events_and_exits_0_after_its_duration() -> None:
    """--duration 6: events stream out within seconds, webhooks verify, exit status 0."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "notifier",
        "demo",
        "--duration",
        "6s",
        "--viewers",
        "60",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(process.communicate(), 80)
    assert process.returncode == 0, err.decode()
    events = [json.loads(line) for line in out.decode().splitlines()]  # the stdout sink
    assert sum(e["type"] == "viewer.connected" for e in events) >= 60
    assert [e["sequence"] for e in events] == sorted(e["sequence"] for e in events)
    story = err.decode().splitlines()
    assert story[0].startswith("storm-notifier demo: simulator http://127.0.0.1:")
    assert story[0].endswith(", embedded Redis, 60 viewers, for 6 s.")
    match = re.fullmatch(SUMMARY, story[-1])
    assert match is not None, story[-1]
    assert int(match.group(1).replace(",", "")) == len(events)
    assert int(match.group(2).replace(",", "")) > 0


async def test_demo_rejects_a_bad_duration() -> None:
    """A duration that is not one is a usage error: one line, exit 2."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "notifier",
        "demo",
        "--duration",
        "soon",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    assert len(err.decode().splitlines()) == 1
    assert "--duration" in err.decode()


@pytest.mark.timeout(120)
async def test_demo_with_slack_posts_an_incident_message_to_its_local_slack() -> None:
    """--slack: a Slack app sink posts to the local stand-in; the scripted incident on stream
    123 gives an incident message, edited (figures, then resolved), with thread replies."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "notifier", "demo", "--slack", "--duration", "45s",
        "--viewers", "150",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), 110)
    assert process.returncode == 0, err.decode()
    last = err.decode().splitlines()[-1]
    match = re.match(r"slack: (\d+) messages \((\d+) incidents, (\d+) edited\), (\d+) thread", last)
    assert match is not None, last
    messages, incidents, edited, replies = (int(n) for n in match.groups())
    assert incidents >= 1
    assert edited >= 1
    assert replies >= 1
    assert messages >= incidents
