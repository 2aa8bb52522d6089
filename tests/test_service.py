"""Supervision: a crashed task is logged and restarted, never silently gone; a stop is said at
once and is not held by a poll that cannot reach Storm."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

import pytest

from notifier.config import load_settings
from notifier.logs import configure_logging
from notifier.service import STOP_GRACE, stop_grace, supervise

from .conftest import free_port

if TYPE_CHECKING:
    from pathlib import Path


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


def _config(tmp_path: Path, redis_url: str, *, sinks: str = "") -> Path:
    path = tmp_path / "notifier.yaml"
    path.write_text(
        f"redis: {{url: '{redis_url}'}}\n"
        "clusters:\n"
        "  - name: sim\n"
        f"    base_url: http://127.0.0.1:{free_port()}\n"  # nobody listens: refused
        "    auth: {token: tok-sim}\n"
        "    poll_interval: 1s\n"
        "    poll_budget: 30s\n"
        f"server: {{listen: '127.0.0.1:{free_port()}'}}\n"
        f"{sinks}"
        "logging: {format: json, level: info}\n"
    )
    return path


def test_the_stop_grace_is_for_commits_and_deliveries_not_the_poll_budget(
    tmp_path: Path,
) -> None:
    """A poller waits STOP_GRACE for its commit; a sink role adds its slowest delivery; the
    poll budget (30 s here) counts for nothing."""
    sinks = "sinks: [{name: out, type: stdout}]\n"
    settings = load_settings(_config(tmp_path, "redis://127.0.0.1:1/0", sinks=sinks), {})
    assert stop_grace(settings, "poller") == STOP_GRACE
    worst = settings.sinks[0].delivery_needs().worst_delivery
    assert stop_grace(settings, "all") == stop_grace(settings, "sinks") == worst > STOP_GRACE


def _records(raw: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in raw.splitlines() if line.startswith(b"{")]


@pytest.mark.timeout(90)
async def test_sigterm_with_storm_unreachable_says_stopping_and_exits_within_seconds(
    tmp_path: Path, redis_url: str
) -> None:
    """`notifier run` against a refused Storm port: the outage is warned at once; SIGTERM logs
    service.stopping first, the poll in flight is abandoned, and the process exits 0 in
    seconds, not after the 30 s poll budget."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "notifier",
        "run",
        "--config",
        str(_config(tmp_path, redis_url)),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stderr is not None
    before: list[dict[str, Any]] = []
    try:
        while not any(r["event"] == "poller.storm_unavailable" for r in before):
            line = await asyncio.wait_for(process.stderr.readline(), 30)
            assert line, f"exited early: {before}"
            before += _records(line)
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        after = _records(await asyncio.wait_for(process.stderr.read(), 30))
        code = await asyncio.wait_for(process.wait(), 30)
        took = time.monotonic() - signalled
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert code == 0
    assert took < 6, took  # about 0.1 s on an idle machine
    events = [r["event"] for r in after if not r["event"].startswith("storm.request")]
    assert events[0] == "service.stopping"
    assert events[-1] == "service.stopped"
    assert events.index("poller.poll_abandoned") < events.index("service.stopped")
    stopping = next(r for r in after if r["event"] == "service.stopping")
    assert (stopping["role"], stopping["level"]) == ("all", "info")
    (warned,) = [r for r in before if r["event"] == "poller.storm_unavailable"]
    assert "refused" in warned["error"]
    started = [r["event"] for r in before].index("service.started")
    assert [r["event"] for r in before].index("poller.storm_unavailable") > started
    assert "tok-sim" not in json.dumps(before + after)
