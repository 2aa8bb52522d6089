"""`notifier demo`: the whole pipeline with nothing set up, stopping by itself."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

import pytest
from rich.console import Console

from notifier.commands.demo import _View

if TYPE_CHECKING:
    from notifier.commands.demo import _Receiver
    from notifier.service import Service


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
    pattern = r"demo finished: (\d+) events .*; (\d+) webhooks verified, 0 rejected"
    match = re.match(pattern, story[-1])
    assert match is not None, story[-1]
    assert int(match.group(1)) == len(events)
    assert int(match.group(2)) > 0


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


def test_the_live_view_shows_stream_events_within_80x24() -> None:
    """The latest four stream events stay on top of the feed, with their stream and figures,
    however many viewer events follow; the counters of all nine types; it fits 80x24."""
    console = Console(width=80, height=24, record=True, color_system=None)
    view = _View(console, live=True)
    record = {"id": "v_tnhfdb57dtycrrja", "streamKey": "live-1", "countryCode": "IT",
              "deviceType": "DESKTOP", "healthScore": 83, "healthGrade": "Very Good"}  # fmt: skip
    stream = {"applicationId": "c_41pjso2krv6sk1wj", "streamKey": "live-1"}
    at = "2026-02-05T08:22:40.071Z"
    datas: list[tuple[str, dict[str, Any]]] = [
        ("viewer.connected", {"viewer": record, "initial": True}),
        ("viewer.health_dropped", {"viewer": record, "previous": {"healthScore": 88}}),
        ("stream.audience_started", {"stream": stream, "viewers": 1}),
        ("stream.audience_crossed", {"stream": stream, "threshold": 1000, "direction": "up",
                                     "viewers": 1002, "peakViewers": 1002}),
        ("stream.health_degraded", {"stream": stream, "viewers": 1100, "measured": 1100,
                                    "dropped": 297, "share": 0.27, "breakdown": {}}),
        ("stream.health_recovered", {"stream": stream, "viewers": 1000, "measured": 1000,
                                     "dropped": 40, "share": 0.04, "breakdown": {},
                                     "incident": {"durationMs": 7_500_000}}),
        ("stream.audience_ended", {"stream": stream, "summary": {"durationMs": 7_530_000,
                                   "peakViewers": 1204, "endedDegraded": True}}),
        ("viewer.disconnected", {"viewer": record, "lastSeenAt": at}),
    ]  # fmt: skip
    datas += [("viewer.connected", {"viewer": record})] * 30
    for n, (kind, data) in enumerate(datas):
        subject = record["id"] if kind.startswith("viewer.") else "live-1"
        view.add({"type": kind, "time": at, "subject": subject, "sequence": n, "data": data})
    service = cast("Service", SimpleNamespace(pollers=[], sinks={}))
    receiver = cast("_Receiver", SimpleNamespace(verified=3, rejected=0))
    console.print(view.render(service, receiver, "http://127.0.0.1:41234"))
    screen = console.export_text().splitlines()
    assert len(screen) <= 24
    assert max(len(line) for line in screen) <= 80
    text = "\n".join(screen)
    assert "■ ended degraded" in screen[8]  # the newest stream event, under the feed's heading
    assert "▶ stream started" not in text  # the fifth newest
    assert re.search(r"audience started +1 ", text)
    for shown in ("↗ reached 1,000", "1,002 viewers, peak 1,002",
                  "✖ degraded", "27% dropped (297/1,100)", "4% dropped after 2 h 5 min",
                  "■ ended degraded", "after 2 h 5 min, peak 1,204", "live streams",
                  "stream degraded", "● joined"):  # fmt: skip
        assert shown in text, shown


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


def test_the_live_view_shows_the_slack_channel_as_slack_would_within_80x24() -> None:
    """With --slack the feed is the channel's incident message: header, figures, the thread's
    figures and its replies; a long breakdown table is cut first; it fits 80x24."""
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
    console = Console(width=80, height=24, record=True, color_system=None)
    view = _View(console, live=True, slack=slack)
    service = cast("Service", SimpleNamespace(pollers=[], sinks={}))
    receiver = cast("_Receiver", SimpleNamespace(verified=0, rejected=0))
    console.print(view.render(service, receiver, "http://127.0.0.1:41234"))
    screen = console.export_text().splitlines()
    assert len(screen) <= 24
    assert max(len(line) for line in screen) <= 80
    text = "\n".join(screen)
    shown = (
        "#incidents on a local Slack · 1 message",
        "🚨 Incident · live-1 · demo",
        "live-1 degraded: 30% of 100 viewers dropped (30)",
        "In the thread: 12 viewers dropped · 5 recovered",
        "💬 1 reply · edited 2x",
    )
    for said in shown:
        assert said in text, said
