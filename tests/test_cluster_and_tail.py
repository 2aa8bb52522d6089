"""A real 3-master Redis Cluster end to end, and `notifier tail` following the stream."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from typing import TYPE_CHECKING

import pytest
from redis.asyncio import Redis, RedisCluster

from notifier.keys import ClusterKeys
from testkit.detection_support import assert_well_formed, lockstep, stream_events

from .test_poller_processes import (
    DETECTION,
    SIM,
    faults,
    lifecycle,
    services,
    verify,
    wait_for_polls,
    write_config,
)

if TYPE_CHECKING:
    from pathlib import Path

    from testkit.redis_procs import RedisCluster3, RedisServer


KEYS = ClusterKeys("notifier", "sim")


@pytest.mark.timeout(90)
async def test_detection_on_a_three_master_redis_cluster(
    tmp_path: Path, redis_cluster: RedisCluster3
) -> None:
    """With redis.cluster: true every key of a cluster lands in one slot and the stream is exact."""
    client = RedisCluster.from_url(redis_cluster.url)
    try:
        async with lockstep(SIM, faults(), redis_cluster.url, KEYS, cluster=True) as sim:
            config = write_config(tmp_path, sim.url, redis_cluster.url, cluster=True)
            async with services(config, tmp_path / "run.log") as (service,):
                await wait_for_polls(sim, 6)
                await service.kill()  # and a crash on the cluster, for good measure
            async with services(config, tmp_path / "run.log") as (service,):
                await wait_for_polls(sim, await sim.polls() + 6)
                assert await service.stop() == 0
            await verify(sim, client)  # type: ignore[arg-type]
            slots = {
                client.keyslot(key)
                for key in (KEYS.events, KEYS.viewers, KEYS.meta, KEYS.lease, KEYS.fence)
            }
            assert len(slots) == 1
            tail = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "notifier",
                "tail",
                "--config",
                str(config),
                "--from",
                "0",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            assert tail.stdout is not None
            expected = await client.xlen(KEYS.events)
            lines = [await asyncio.wait_for(tail.stdout.readline(), 30) for _ in range(expected)]
            tail.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(tail.wait(), 30) == 0
            events = [json.loads(line) for line in lines]
            assert events == await stream_events(client, KEYS.events)
            assert lifecycle(events)
    finally:
        await client.aclose()
    assert DETECTION.leader_lease == 1.0


@pytest.mark.timeout(90)
async def test_tail_prints_new_events_as_they_arrive(
    tmp_path: Path, redis_server: RedisServer, redis: Redis
) -> None:
    """`tail` (from $) prints only events committed after it started, one JSON per line."""
    async with lockstep(SIM, faults(), redis_server.url, KEYS) as sim:
        config = write_config(tmp_path, sim.url, redis_server.url)
        async with services(config, tmp_path / "run.log") as (service,):
            await wait_for_polls(sim, 3)
            assert await service.stop() == 0
        already = await redis.xlen(KEYS.events)
        tail = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "notifier",
            "tail",
            "--config",
            str(config),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert tail.stdout is not None
        assert tail.stderr is not None
        while b"tail.following" not in await asyncio.wait_for(tail.stderr.readline(), 30):
            pass  # each line is a log event; the one we wait for says tail is in place
        try:
            async with services(config, tmp_path / "run.log") as (service,):
                await wait_for_polls(sim, 8)
                assert await service.stop() == 0
            total = await redis.xlen(KEYS.events)
            assert total > already
            lines = [
                await asyncio.wait_for(tail.stdout.readline(), 30) for _ in range(total - already)
            ]
            tail.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(tail.wait(), 30) == 0
        finally:
            if tail.returncode is None:
                tail.kill()
                await tail.wait()
    events = [json.loads(line) for line in lines]
    assert events == (await stream_events(redis, KEYS.events))[already:]
    assert_well_formed(await stream_events(redis, KEYS.events), "sim")


async def test_tail_rejects_a_bad_start_id(tmp_path: Path, redis_server: RedisServer) -> None:
    """`--from yesterday` is a usage error: one line, exit 2."""
    config = write_config(tmp_path, "http://127.0.0.1:1", redis_server.url)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "notifier",
        "tail",
        "--config",
        str(config),
        "--from",
        "yesterday",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    assert stderr.decode() == (
        "notifier: --from 'yesterday': expected an entry id like 1700000000000-0, 0 or $\n"
    )
