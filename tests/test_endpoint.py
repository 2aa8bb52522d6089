"""The HTTP endpoint of `notifier run`: /metrics moves, /readyz follows Redis and sinks."""

from __future__ import annotations

import asyncio
import re
import sys
from typing import TYPE_CHECKING

import aiohttp
import pytest

from notifier.simulator import PopulationSettings, SimulatorSettings, running_simulator

from .conftest import free_port

if TYPE_CHECKING:
    from pathlib import Path

    from testkit.redis_procs import RedisServer


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels`` (0 when absent)."""
    total = 0.0
    for match in re.finditer(
        rf"^{re.escape(name)}(?:\{{([^}}]*)\}})? (\S+)$", text, flags=re.MULTILINE
    ):
        found = match.group(1) or ""
        if all(f'{k}="{v}"' in found for k, v in labels.items()):
            total += float(match.group(2))
    return total


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    """Status and body of a GET."""
    async with session.get(url) as response:
        return response.status, await response.text()


@pytest.mark.timeout(150)
async def test_metrics_move_and_readiness_follows_redis(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """/metrics carries the documented metrics with moving values; /readyz goes not-ready with
    a reason while Redis is down and ready again when it is back."""
    port = free_port()
    settings = SimulatorSettings(
        population=PopulationSettings(seed=4, viewers=80), static_tokens=("tok",), tick=0.2
    )
    async with running_simulator(settings) as sim:
        config = tmp_path / "notifier.yaml"
        config.write_text(
            f"redis: {{url: '{redis_server.url}'}}\n"
            f"clusters:\n  - {{name: eu-1, base_url: '{sim.url}', auth: {{token: tok}},"
            " poll_interval: 200ms, poll_budget: 2s}\n"
            "detection: {leader_lease: 1s}\n"
            "sinks:\n  - {name: out, type: stdout}\n"
            f"server: {{listen: '127.0.0.1:{port}'}}\n"
            "logging: {format: json, level: info}\n"
        )
        service = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "notifier",
            "run",
            "--config",
            str(config),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        assert service.stderr is not None
        base = f"http://127.0.0.1:{port}"
        try:
            while b"endpoint.listening" not in await asyncio.wait_for(
                service.stderr.readline(), 30
            ):
                pass  # log lines until the endpoint says it listens
            drain = asyncio.create_task(service.stderr.read())  # never let the pipe fill up
            async with aiohttp.ClientSession() as http:
                assert await get(http, f"{base}/healthz") == (200, "ok\n")
                status, body = await get(http, f"{base}/readyz")
                while status != 200:  # until the first poll is committed
                    status, body = await get(http, f"{base}/readyz")
                assert body == "ready\n"
                _, first = await get(http, f"{base}/metrics")
                for name in (
                    "notifier_polls_total",
                    "notifier_poll_duration_seconds_count",
                    "notifier_viewers",
                    "notifier_events_total",
                    "notifier_deliveries_total",
                    "notifier_delivery_duration_seconds_count",
                    "notifier_sink_lag",
                    "notifier_dead_letters",
                ):
                    assert re.search(rf"^{name}\b", first, flags=re.MULTILINE), name
                polls = metric(first, "notifier_polls_total", outcome="committed")
                second = first
                while metric(second, "notifier_polls_total", outcome="committed") <= polls:
                    _, second = await get(http, f"{base}/metrics")
                assert metric(second, "notifier_viewers", cluster="eu-1") > 0
                assert metric(second, "notifier_events_total", type="viewer.connected") >= 50
                assert metric(second, "notifier_deliveries_total", outcome="delivered") > 0

                redis_server.stop()
                status, body = await get(http, f"{base}/readyz")
                assert status == 503
                assert "redis: unreachable" in body
                redis_server.restart()
                while (await get(http, f"{base}/readyz"))[0] != 200:
                    await asyncio.sleep(0.1)  # polling the endpoint until it recovers
            service.terminate()
            assert await asyncio.wait_for(service.wait(), 60) == 0
            assert b"service.stopped" in await drain
        finally:
            if service.returncode is None:
                service.kill()
                await service.wait()
