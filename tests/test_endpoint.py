"""The HTTP endpoint of `notifier run`: /metrics moves, /readyz follows Redis and sinks."""

from __future__ import annotations

import asyncio
import re
import sys
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import aiohttp
import msgspec
import pytest
from aiohttp.test_utils import TestServer

from notifier.config import Settings
from notifier.keys import ClusterKeys
from notifier.metrics import Metrics
from notifier.server.endpoint import Endpoint
from notifier.simulator import PopulationSettings, SimulatorSettings, running_simulator
from notifier.sinks.control import SinkControl
from notifier.status import Status

from .conftest import free_port

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping
    from pathlib import Path

    from redis.asyncio import Redis

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
                    "notifier_sink_waiting",
                    "notifier_sink_partition_lag",
                    "notifier_sink_partition_pending",
                    "notifier_sink_partition_leading",
                    "notifier_dead_letters",
                    "notifier_fleet_replicas",
                    "notifier_leases_held",
                    "notifier_lease_cap",
                ):
                    assert re.search(rf"^{name}\b", first, flags=re.MULTILINE), name
                polls = metric(first, "notifier_polls_total", outcome="committed")
                second = first
                while metric(second, "notifier_polls_total", outcome="committed") <= polls:
                    _, second = await get(http, f"{base}/metrics")
                assert metric(second, "notifier_viewers", cluster="eu-1") > 0
                assert metric(second, "notifier_events_total", type="viewer.connected") >= 50
                assert metric(second, "notifier_deliveries_total", outcome="delivered") > 0
                assert metric(second, "notifier_sink_partition_leading", partition="0") == 1
                while metric(second, "notifier_leases_held", kind="sinks") < 1:
                    _, second = await get(http, f"{base}/metrics")  # the fleet's next round
                assert metric(second, "notifier_fleet_replicas") == 1  # alone: holds every lease
                assert metric(second, "notifier_leases_held", kind="pollers") == 1
                assert metric(second, "notifier_lease_cap", kind="sinks") == 1

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


# --- /api/status and the causes in /readyz ----------------------------------------------------

EU_1 = ClusterKeys("notifier", "eu-1")


def two_sinks(redis_url: str) -> Settings:
    """Cluster eu-1 and the sinks ``out`` and ``ops``, the endpoint on loopback."""
    return Settings.model_validate(
        {
            "redis": {"url": redis_url},
            "clusters": [
                {"name": "eu-1", "base_url": "http://127.0.0.1:9", "auth": {"token": "t"}}
            ],
            "sinks": [{"name": "out", "type": "stdout"}, {"name": "ops", "type": "stdout"}],
            "server": {"listen": "127.0.0.1:0"},
        }
    )


@asynccontextmanager
async def serving(
    redis_url: str,
    redis: Redis,
    *,
    polling: bool = True,
    sinks: Mapping[str, SinkControl] | None = None,
) -> AsyncIterator[str]:
    """The real endpoint application on 127.0.0.1; yields its base URL."""
    endpoint = Endpoint(two_sinks(redis_url), redis, Metrics(), sinks or {}, polling=polling)
    server = TestServer(endpoint.app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


async def test_api_status_is_the_model_and_readyz_gives_the_same_causes(
    redis_server: RedisServer, redis: Redis
) -> None:
    """/api/status is the status model as JSON; /readyz lists the same problem lines, the
    failed login and the paused sink included; with Redis down both answer 503 with the
    reason (JSON for the API)."""
    await failed_login(redis)
    await redis.hset(EU_1.sink_state("ops"), "paused", "slack: invalid_auth (token revoked)")
    async with serving(redis_server.url, redis) as base, aiohttp.ClientSession() as http:
        async with http.get(f"{base}/api/status") as response:
            assert response.status == 200
            assert response.content_type == "application/json"
            status = msgspec.json.decode(await response.read(), type=Status)
        assert [c.name for c in status.clusters] == ["eu-1"]
        assert [s.name for s in status.sinks] == ["out", "ops"]
        assert status.problems == [
            "cluster eu-1: not polled yet: storm: login failed (401)",
            "sink ops: paused: slack: invalid_auth (token revoked)",
        ]
        code, body = await get(http, f"{base}/readyz")
        assert (code, body.splitlines()) == (503, ["not ready", *status.problems])

        redis_server.stop()
        async with http.get(f"{base}/api/status") as response:
            assert response.status == 503
            assert response.content_type == "application/json"
            error = (await response.json())["error"]
        assert error.startswith("redis: unreachable (")
        code, body = await get(http, f"{base}/readyz")
        assert code == 503
        assert body.splitlines()[1].startswith("redis: unreachable (")


async def failed_login(redis: Redis) -> None:
    """The poll cycle the leading poller of eu-1 writes when its login is refused."""
    await redis.hset(
        EU_1.status,
        mapping={
            "at": 1,
            "duration": "0.2",
            "complete": "0",
            "reason": "storm: login failed (401)",
        },
    )
    await redis.set(EU_1.lease, "host-1-abcd:1")


async def test_a_sinks_only_replica_is_ready_whatever_the_pollers_do(
    redis_url: str, redis: Redis
) -> None:
    """--role sinks: /readyz leaves the clusters out, but a sink paused here counts even
    before its report reaches Redis, and once it is there it is one line, not two."""
    await failed_login(redis)
    control = SinkControl("out")
    async with (
        serving(redis_url, redis, polling=False, sinks={"out": control}) as base,
        aiohttp.ClientSession() as http,
    ):
        assert await get(http, f"{base}/readyz") == (200, "ready\n")
        control.pause("HTTP 410 (Gone: the endpoint was removed)")
        line = "sink out: paused: HTTP 410 (Gone: the endpoint was removed)"
        assert await get(http, f"{base}/readyz") == (503, f"not ready\n{line}\n")
        await redis.hset(EU_1.sink_state("out"), "paused", control.paused or "")
        assert await get(http, f"{base}/readyz") == (503, f"not ready\n{line}\n")
