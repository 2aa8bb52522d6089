"""Supervision: a crashed task is logged and restarted, never silently gone."""

from __future__ import annotations

import asyncio
import io
import json

from notifier.logs import configure_logging
from notifier.service import supervise


async def test_a_crashing_task_is_logged_and_restarted() -> None:
    """Two crashes, two log lines with the error, then the third run finishes normally."""
    log = io.StringIO()
    configure_logging(fmt="json", level="info", stream=log)
    runs: list[int] = []

    async def work() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise RuntimeError(f"boom {len(runs)}")

    await asyncio.wait_for(supervise("poller:x", work, asyncio.Event(), backoff=(0.01,)), 10)
    assert len(runs) == 3
    crashes = [
        json.loads(line) for line in log.getvalue().splitlines() if "service.task_crashed" in line
    ]
    assert [c["error"] for c in crashes] == ["RuntimeError: boom 1", "RuntimeError: boom 2"]
    assert all(c["task"] == "poller:x" and c["level"] == "error" for c in crashes)


async def test_a_stop_during_the_backoff_ends_supervision() -> None:
    """A task that keeps crashing stops being restarted once stop is set."""
    stop = asyncio.Event()
    runs: list[int] = []

    async def work() -> None:
        runs.append(1)
        stop.set()
        raise RuntimeError("always")

    configure_logging(fmt="json", level="error", stream=io.StringIO())
    await asyncio.wait_for(supervise("sink:x", work, stop, backoff=(60.0,)), 10)
    assert runs == [1]
