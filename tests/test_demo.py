"""`notifier demo`: the whole pipeline with nothing set up, stopping by itself."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys

import pytest


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
