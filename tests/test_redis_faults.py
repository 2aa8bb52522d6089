"""Redis faults against a real `notifier run` (poller, webhook sink, endpoint): the service
resumes by itself, `/readyz` says not ready during the fault and ready after, the stream is
exactly the ground truth (nothing lost, nothing twice, nothing invented), and every event
reaches the receiver at least once.

The ground truth is ``testkit.fault_support.EveryPoll``: the audience moves on at every poll,
Redis or no Redis, so what changed while Redis was away must still be emitted; each test
counts the events its fault windows held. Faults: redis-server SIGKILLed and restarted from its
AOF (``appendfsync always``) twice; stopped for 30 s; SIGSTOPped for 15 s; ``maxmemory``
reached (writes refused); and a Redis Cluster master failover (``CLUSTER FAILOVER`` on its
replica, 3 masters + 3 replicas).
"""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from redis.asyncio import Redis, RedisCluster

from notifier.config import DetectionSettings
from notifier.keys import ClusterKeys
from notifier.simulator import PopulationSettings, SimulatorSettings
from testkit.fault_support import (
    EveryPoll,
    Notifier,
    every_poll,
    log_events,
    notifier,
    polls_committed,
    verify_exact,
)
from testkit.fleet_support import LEASE, PREFIX, SECRET, Hook, undelivered, write_config
from testkit.lane_watch import until
from testkit.receivers import WebhookReceiver
from testkit.redis_procs import RedisCluster3, RedisServer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from pathlib import Path

    from notifier.redis_client import AnyRedis
    from testkit.reliability import Tally

KEYS = ClusterKeys(PREFIX, "sim")
DETECTION = DetectionSettings.model_validate({"leader_lease": LEASE})
POPULATION = PopulationSettings(
    seed=31, viewers=100, join_rate=0.08, leave_rate=0.08, health_change_rate=0.3, no_data_rate=0.1
)
SIM = SimulatorSettings(population=POPULATION, static_tokens=("tok-sim",))


@dataclass
class World:
    """Everything a fault test runs: the simulator, the receiver, the service (its log in
    ``log``), an HTTP client for its endpoint, the test's own Redis client."""

    sim: EveryPoll
    receiver: WebhookReceiver
    service: Notifier
    http: aiohttp.ClientSession
    redis: AnyRedis
    log: Path


@asynccontextmanager
async def world(tmp_path: Path, redis_url: str, *, cluster: bool = False) -> AsyncIterator[World]:
    """The world of one test, the service ready."""
    async with AsyncExitStack() as stack:
        sim = await stack.enter_async_context(every_poll(SIM))
        receiver = await stack.enter_async_context(WebhookReceiver(SECRET))
        config = write_config(
            tmp_path / "notifier.yaml",
            redis_url=redis_url,
            clusters={"sim": sim.url},
            hooks=[Hook("hook", receiver.url)],
            cluster=cluster,
        )
        log = tmp_path / "run.log"
        service = await stack.enter_async_context(notifier(config, log))
        timeout = aiohttp.ClientTimeout(total=3)
        http = await stack.enter_async_context(aiohttp.ClientSession(timeout=timeout))
        redis: AnyRedis = RedisCluster.from_url(redis_url) if cluster else Redis.from_url(redis_url)
        stack.push_async_callback(redis.aclose)
        await service.until_readiness(http, 200)
        yield World(sim, receiver, service, http, redis, log)


async def more_polls(redis: AnyRedis, count: int, timeout: float = 60) -> int:
    """Until ``count`` more polls are committed than now (checked every 20 ms)."""
    deadline = time.monotonic() + timeout
    start = await polls_committed(redis, KEYS)
    while (now := await polls_committed(redis, KEYS)) < start + count:
        assert time.monotonic() < deadline, f"{now - start} of {count} polls committed"
        await asyncio.sleep(0.02)
    return now


async def finish(w: World, windows: list[tuple[float, float]], tally: Tally) -> dict[str, Any]:
    """After the faults: a few more polls, every event delivered, a clean stop; the stream
    checked against the truth. Returns the figures: events, events detected inside the fault
    windows, outage log lines."""
    await more_polls(w.redis, 5)
    events = await verify_exact(w.sim, w.redis, KEYS, DETECTION)
    deadline = time.monotonic() + 60
    while (lacking := undelivered([w.receiver], {"sim": events})) is not None:
        assert time.monotonic() < deadline, lacking
        await asyncio.sleep(0.05)
    assert await w.service.replica.stop() == 0
    during = sum(1 for e in events if any(a <= _seconds(e["time"]) <= b for a, b in windows))
    assert not log_events(w.log, "poller.backlog_dropped")
    assert not log_events(w.log, "poller.commit_fenced")
    held = log_events(w.log, "poller.holding_polls")
    tally.events = len(events)
    return {"events": len(events), "during": during, "held": held}


def _seconds(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def through(
    w: World,
    tally: Tally,
    fault: Callable[[], Awaitable[object]],
    heal: Callable[[], Awaitable[object]],
    hold: float,
) -> tuple[float, float]:
    """Inject ``fault``, see /readyz go not ready, keep it ``hold`` seconds, ``heal``, see
    /readyz ready again; the wall-clock window of the fault."""
    start = time.time()
    await fault()
    tally.tried += 1
    try:
        await w.service.until_readiness(w.http, 503)
        await asyncio.sleep(hold)  # the fault's length, as the issue sets it
    finally:
        await heal()
    end = time.time()
    await w.service.until_readiness(w.http, 200, timeout=60)
    return start, end


def off_loop(call: Callable[[], object]) -> Callable[[], Awaitable[object]]:
    """``call`` in a thread: starting redis-server waits for it, and the simulator and the
    receiver run on this test's event loop."""
    return lambda: asyncio.to_thread(call)


@pytest.mark.timeout(180)
@pytest.mark.reliability(
    fault="Redis crashes and restarts from its AOF",
    injected=(
        "redis-server SIGKILLed (appendfsync always), 8 s down, restarted from its AOF; twice in "
        "one run"
    ),
    checked=(
        "the leader polls on through it; the stream is exactly the ground truth of every poll "
        "(the audience moved on meanwhile); every event delivered at least once; /readyz 503 "
        "during, 200 after"
    ),
)
async def test_redis_killed_and_restarted_from_its_aof_twice_loses_nothing(
    tmp_path: Path, tally: Tally
) -> None:
    """SIGKILL redis-server (``appendfsync always``), 8 s down, restart from the AOF; twice. The
    leader goes on polling, keeps what it detects, and writes it in order when Redis is back."""
    server = RedisServer(tmp_path / "redis", appendonly=True, appendfsync="always")
    with server:
        async with world(tmp_path, server.url) as w:
            windows = []
            for _ in range(2):
                await more_polls(w.redis, 5)
                windows.append(
                    await through(w, tally, off_loop(server.kill), off_loop(server.start), 8)
                )
            figures = await finish(w, windows, tally)
    assert figures["during"] > 0, figures  # the outages held events, and none was lost
    assert len(figures["held"]) >= 2  # (a restarted Redis loading its AOF is a short outage too)


@pytest.mark.timeout(180)
@pytest.mark.reliability(
    fault="Redis stopped for 30 s",
    injected="redis-server stopped (SIGTERM), 30 s down, started again with its data",
    checked=(
        "as for the crash: exact stream, every event delivered, /readyz 503 then 200; one outage "
        "line and one recovery line"
    ),
)
async def test_redis_stopped_for_30_seconds_loses_nothing(tmp_path: Path, tally: Tally) -> None:
    """redis-server stopped (SIGTERM: it saves) for 30 s and started again with its data."""
    server = RedisServer(tmp_path / "redis", appendonly=True)
    with server:
        async with world(tmp_path, server.url) as w:
            await more_polls(w.redis, 5)
            window = await through(w, tally, off_loop(server.stop), off_loop(server.start), 30)
            figures = await finish(w, [window], tally)
    assert figures["during"] > 0, figures
    log = tmp_path / "run.log"
    outages = log_events(log, "poller.redis_unavailable")
    assert 1 <= len(outages) <= 3  # (a Redis loading its data refuses a command or two)
    assert len(log_events(log, "poller.redis_recovered")) == len(outages)


@pytest.mark.timeout(180)
@pytest.mark.reliability(
    fault="Redis hangs (paused 15 s)",
    injected=(
        "SIGSTOP of redis-server for 15 s, then SIGCONT: connections stay open and nothing answers"
    ),
    checked=(
        "the leader stops waiting after the 5 s reply timeout and polls on; exact stream, every "
        "event delivered, /readyz 503 then 200"
    ),
)
async def test_redis_paused_for_15_seconds_loses_nothing(tmp_path: Path, tally: Tally) -> None:
    """SIGSTOP redis-server for 15 s: Redis neither answers nor refuses; the leader stops
    waiting on it after the reply timeout, polls on, and writes it all after SIGCONT."""
    server = RedisServer(tmp_path / "redis")
    with server:
        async with world(tmp_path, server.url) as w:
            await more_polls(w.redis, 5)
            window = await through(w, tally, off_loop(server.pause), off_loop(server.resume), 15)
            figures = await finish(w, [window], tally)
    assert figures["during"] > 0, figures


@pytest.mark.timeout(180)
@pytest.mark.reliability(
    fault="Redis out of memory (writes refused)",
    injected=(
        "CONFIG SET maxmemory 1 with noeviction for 8 s: reads answered, every write refused with"
        " OOM"
    ),
    checked=(
        "what the polls found waits and is written when the limit goes; exact stream, every event"
        " delivered, /readyz 503 then 200"
    ),
)
async def test_redis_at_maxmemory_refusing_writes_loses_nothing(
    tmp_path: Path, tally: Tally
) -> None:
    """``maxmemory`` 1 byte with ``noeviction``: reads are answered and every write refused
    (OOM) for 8 s; then the limit goes away."""
    server = RedisServer(tmp_path / "redis")
    with server:
        admin = Redis.from_url(server.url)
        try:
            async with world(tmp_path, server.url) as w:
                await more_polls(w.redis, 5)
                await admin.config_set("maxmemory-policy", "noeviction")
                window = await through(
                    w,
                    tally,
                    lambda: admin.config_set("maxmemory", 1),
                    lambda: admin.config_set("maxmemory", 0),
                    8,
                )
                figures = await finish(w, [window], tally)
        finally:
            await admin.aclose()
    assert figures["during"] > 0, figures
    assert figures["held"], "the refused writes were never held"


@pytest.mark.timeout(240)
@pytest.mark.reliability(
    fault="Redis Cluster master failover",
    injected=(
        "CLUSTER FAILOVER on the replica of the master serving the cluster's keys (3 masters + 3 "
        "replicas), there and back"
    ),
    checked="the client follows the new master; exact stream, every event delivered",
)
async def test_a_redis_cluster_master_failover_loses_nothing(tmp_path: Path, tally: Tally) -> None:
    """3 masters + 3 replicas; ``CLUSTER FAILOVER`` on the replica of the master serving the
    cluster's keys, twice (there and back): the client follows the new master."""
    with RedisCluster3(tmp_path / "cluster", replicas=1) as nodes:
        async with world(tmp_path, nodes.url, cluster=True) as w:
            for _ in range(2):
                await more_polls(w.redis, 5)
                await fail_over(nodes, KEYS.meta)
                tally.tried += 1
            figures = await finish(w, [], tally)
    assert figures["events"] > 0


async def fail_over(nodes: RedisCluster3, key: str, *, tries: int = 3) -> None:
    """Promote the replica of the master serving ``key``'s slot, as an operator would: wait
    until the replica follows its master (a manual failover needs the link up), ask for
    ``CLUSTER FAILOVER``, and ask again if Redis gave it up (it does, silently, when the
    replica cannot catch up within 5 s, as after a role swap's resync)."""
    for _ in range(tries):
        master, replicas = nodes.node_serving(key)
        replica = Redis.from_url(replicas[0].url)
        try:
            await until(partial(_following, replica), f"{replicas[0]!r} following its master")
            await replica.execute_command("CLUSTER", "FAILOVER")  # type: ignore[no-untyped-call]
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                if nodes.node_serving(key)[0] is not master:
                    return
                await asyncio.sleep(0.05)  # the pace of the checks, not a synchronisation
        finally:
            await replica.aclose()
    raise AssertionError(f"no failover of {key!r}'s master in {tries} tries")


async def _following(replica: Redis) -> bool:
    info = await replica.info("replication")
    return info.get("role") == "slave" and info.get("master_link_status") == "up"
