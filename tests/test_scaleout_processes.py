"""Scale-out (SPEC 8) on real `notifier run` processes: shares of the leases through a SIGKILL
and a restart, on one redis-server and on a 3-master Redis Cluster, and a rolling change of a
sink's partitions; every cluster's stream checked against a lockstep ground truth, every
receiver against the streams."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import pytest
from redis.asyncio import RedisCluster

from notifier.keys import ClusterKeys
from notifier.simulator import Faults, PopulationSettings, SimulatorSettings
from testkit.detection_support import (
    assert_streams_causal,
    assert_well_formed,
    expected_events,
    lockstep,
    stream_events,
)
from testkit.fleet_support import (
    LEASE,
    PREFIX,
    SECRET,
    Hook,
    Replica,
    arrivals,
    assert_delivered,
    freeze,
    lease_keys,
    shares,
    undelivered,
    until,
    write_config,
)
from testkit.receivers import Reply, WebhookReceiver

from .test_poller_processes import DETECTION, expected_lifecycle, lifecycle

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence
    from pathlib import Path

    from redis.asyncio import Redis

    from notifier.redis_client import AnyRedis
    from testkit.detection_support import Lockstep
    from testkit.redis_procs import RedisCluster3, RedisServer
    from testkit.reliability import Tally

Streams = dict[str, list[dict[str, Any]]]


def simulator(seed: int) -> SimulatorSettings:
    """A small audience that moves every poll: joins, leaves, health changes."""
    population = PopulationSettings(
        seed=seed, viewers=24, join_rate=0.08, leave_rate=0.08, health_change_rate=0.3
    )
    return SimulatorSettings(population=population, static_tokens=("tok-sim",))


def faults(seed: int) -> Faults:
    """Pages of 10 and a few 5xx: retried, never visible in the result."""
    return Faults(seed=seed, max_rows_per_page=10, error_rate=0.02)


async def simulators(
    stack: AsyncExitStack, clusters: Sequence[str], redis_url: str, *, cluster: bool = False
) -> dict[str, Lockstep]:
    """One lockstep simulator per cluster, each with a seed of its own."""
    return {
        name: await stack.enter_async_context(
            lockstep(
                simulator(seed),
                faults(seed),
                redis_url,
                ClusterKeys(PREFIX, name),
                cluster=cluster,
            )
        )
        for seed, name in enumerate(clusters, start=31)
    }


def polled(sims: Mapping[str, Lockstep], more: int) -> Callable[[], Awaitable[str | None]]:
    """A check for ``until``: every cluster has ``more`` committed polls than it has now."""
    targets: dict[str, int] = {}

    async def check() -> str | None:
        counts = {name: await sim.polls() for name, sim in sims.items()}
        for name, count in counts.items():
            targets.setdefault(name, count + more)
        short = {name: n for name, n in counts.items() if n < targets[name]}
        return f"polls {short}, wanted {targets}" if short else None

    return check


async def replicas(stack: AsyncExitStack, config: Path, logs: Sequence[Path]) -> list[Replica]:
    """Replicas started one after the other, each killed at the end if it still runs."""
    started = []
    for log in logs:
        replica = Replica(config, log)
        stack.push_async_callback(replica.ensure_dead)
        started.append(await replica.start())
    return started


async def verify(sim: Lockstep, redis: AnyRedis, cluster: str) -> list[dict[str, Any]]:
    """The cluster's stream == the rules over the states its committed polls saw: nothing lost,
    nothing twice (tests/test_poller_processes.py ``verify``, for any cluster); its events."""
    final = await sim.polls()
    events = await stream_events(redis, ClusterKeys(PREFIX, cluster).events)
    assert_well_formed(events, cluster)
    assert_streams_causal(events)
    assert lifecycle(events) == expected_lifecycle(sim, final)
    expected = expected_events(sim.states[:final], DETECTION)
    for event in events:  # connected events carry the record of the poll that saw them
        if event["type"] == "viewer.connected":
            first = next(d for k, d in expected[event["subject"]] if k == event["type"])
            assert first == event["data"]
    return events


async def drain(
    sims: Mapping[str, Lockstep], redis: AnyRedis, receivers: Sequence[WebhookReceiver]
) -> Streams:
    """Freeze every cluster (no poll completes any more), wait until every receiver has had
    every event of the final streams; the streams."""
    await freeze(list(sims.values()))
    streams = {name: await stream_events(redis, ClusterKeys(PREFIX, name).events) for name in sims}

    async def delivered() -> str | None:
        return undelivered(receivers, streams)

    await until(delivered, timeout=60)
    return streams


async def scale_out(
    tmp_path: Path,
    redis: AnyRedis,
    redis_url: str,
    *,
    clusters: int,
    cluster: bool = False,
    tally: Tally | None = None,
) -> None:
    """3 replicas x ``clusters`` clusters x 2 webhook sinks (one of 2 partitions): balanced at
    the start, after a SIGKILL and after a restart; the streams exact, every event delivered."""
    names = [f"c{i}" for i in range(clusters)]
    async with AsyncExitStack() as stack:
        sims = await simulators(stack, names, redis_url, cluster=cluster)
        plain = await stack.enter_async_context(WebhookReceiver(SECRET))
        split = await stack.enter_async_context(WebhookReceiver(SECRET))
        for receiver in (plain, split):  # deliveries take a while: some are in flight at a kill
            receiver.default = Reply(delay=0.02)
        hooks = [Hook("plain", plain.url), Hook("split", split.url, partitions=2)]
        kinds = lease_keys(names, hooks)
        assert len(kinds["sinks"]) == clusters * 3
        config = write_config(
            tmp_path / "notifier.yaml",
            redis_url=redis_url,
            clusters={name: sim.url for name, sim in sims.items()},
            hooks=hooks,
            cluster=cluster,
        )
        fleet = await replicas(stack, config, [tmp_path / f"replica-{i}.log" for i in range(3)])
        await until(polled(sims, 2), timeout=60)

        async def balanced(
            live: list[Replica], *, within: float, newcomer: Replica | None = None
        ) -> None:
            async def check() -> str | None:
                return await shares(redis, kinds, live, newcomer=newcomer)

            await until(check, timeout=within, steady=LEASE)  # (steady: not a passing moment)

        await balanced(fleet, within=15 * LEASE)  # (the start-up of three processes included)
        victim, survivors = fleet[0], fleet[1:]
        await victim.kill()
        if tally is not None:
            tally.tried += 1
        await balanced(survivors, within=10 * LEASE)  # its leases ran out, the survivors took them
        newcomer = (await replicas(stack, config, [tmp_path / "replica-3.log"]))[0]
        live = [*survivors, newcomer]
        await balanced(live, within=10 * LEASE, newcomer=newcomer)  # clean hand-overs to it
        await until(polled(sims, 3), timeout=30)  # and polling carries on
        streams = await drain(sims, redis, [plain, split])
        assert await asyncio.gather(*(replica.stop() for replica in live)) == [0, 0, 0]
        for name, sim in sims.items():
            assert await verify(sim, redis, name) == streams[name]
    for receiver in (plain, split):
        assert_delivered(receiver, streams)  # at least once: a SIGKILL may repeat some
    if tally is not None:
        tally.events = sum(len(events) for events in streams.values())


@pytest.mark.timeout(120)
@pytest.mark.reliability(
    fault="A replica of three dies and comes back",
    injected="3 replicas, 6 clusters, 2 sinks; SIGKILL of one replica, then a restart",
    checked=(
        "each replica holds at most its share of the 24 leases before, between and after; every "
        "stream exact; every event delivered"
    ),
)
async def test_three_replicas_share_six_clusters_and_two_sinks_through_a_kill_and_a_restart(
    tmp_path: Path, redis_server: RedisServer, redis: Redis, tally: Tally
) -> None:
    """3 replicas, 6 clusters, 2 sinks (6 poller and 18 sink leases): at most ceil(L/N) each
    before a SIGKILL, after it and after a restart; streams exact, every event delivered."""
    await scale_out(tmp_path, redis, redis_server.url, clusters=6, tally=tally)


@pytest.mark.timeout(120)
@pytest.mark.reliability(
    fault="A replica dies, on a Redis Cluster",
    injected="the same as above with redis.cluster: true on 3 masters",
    checked="shares, exact streams and deliveries as above",
)
async def test_the_same_scale_out_on_a_three_master_redis_cluster(
    tmp_path: Path, redis_cluster: RedisCluster3, tally: Tally
) -> None:
    """The full size (6 clusters, 3 replicas, a SIGKILL, a restart) with redis.cluster: true:
    the leases and heartbeats spread over the masters' slots, the shares still hold."""
    client = RedisCluster.from_url(redis_cluster.url)
    try:
        await scale_out(tmp_path, client, redis_cluster.url, clusters=6, cluster=True, tally=tally)
    finally:
        await client.aclose()


async def layouts(redis: Redis, clusters: Sequence[str]) -> set[bytes | str | None]:
    """The sink ``hooks``'s K on every cluster (``P:{C}:sinklayout:hooks``)."""
    return {await redis.get(ClusterKeys(PREFIX, name).sink_layout("hooks")) for name in clusters}


@pytest.mark.timeout(120)
@pytest.mark.reliability(
    fault="Partitions changed on a running fleet",
    injected="two replicas restarted one by one from partitions: 1 to 4 while events flow",
    checked=(
        "the K=4 replica waits while a K=1 one runs, then 4 partitions deliver; every event once,"
        " in order"
    ),
)
async def test_a_live_change_of_partitions_on_running_replicas_delivers_every_event_once(
    tmp_path: Path, redis_server: RedisServer, redis: Redis, tally: Tally
) -> None:
    """Two replicas restarted one by one from partitions: 1 to 4: the K=4 one waits while a K=1
    one runs; then the 4 partitions deliver; every event once, in order, the layout 4."""
    names = ["c0", "c1"]
    async with AsyncExitStack() as stack:
        sims = await simulators(stack, names, redis_server.url)
        receiver = await stack.enter_async_context(WebhookReceiver(SECRET))
        urls = {name: sim.url for name, sim in sims.items()}
        one, four = Hook("hooks", receiver.url), Hook("hooks", receiver.url, partitions=4)
        config_one = write_config(
            tmp_path / "one.yaml", redis_url=redis_server.url, clusters=urls, hooks=[one]
        )
        config_four = write_config(
            tmp_path / "four.yaml", redis_url=redis_server.url, clusters=urls, hooks=[four]
        )
        a, b = await replicas(stack, config_one, [tmp_path / "a1.log", tmp_path / "b1.log"])

        async def shared(kinds: dict[str, list[str]], live: list[Replica]) -> str | None:
            return await shares(redis, kinds, live)

        k1 = lease_keys(names, [one])
        await until(lambda: shared(k1, [a, b]), timeout=15 * LEASE, steady=LEASE)
        await until(polled(sims, 3), timeout=30)
        await receiver.wait_for(1, timeout=30)

        assert await a.stop() == 0  # the rolling change: first a ...
        tally.tried += 1
        await until(lambda: shared(k1, [b]), timeout=10 * LEASE)  # (else a4 would migrate now)
        (a4,) = await replicas(stack, config_four, [tmp_path / "a4.log"])

        async def waiting() -> str | None:
            return None if a4.logged("sink.waiting_for_layout") else "a4 not waiting yet"

        await until(waiting, timeout=30)
        assert await layouts(redis, names) == {b"1"}  # b (K=1) runs: the old layout delivers
        before = len(receiver.received)
        await receiver.wait_for(before + 5, timeout=30)

        assert not a4.logged("sink.leading")  # the flip guard: K=4 stood by beside K=1
        assert await b.stop() == 0  # ... then b
        tally.tried += 1
        (b4,) = await replicas(stack, config_four, [tmp_path / "b4.log"])
        k4 = lease_keys(names, [four])

        async def four_shared() -> str | None:
            return await shares(redis, k4, [a4, b4], newcomer=b4)

        await until(four_shared, timeout=15 * LEASE, steady=LEASE)
        assert await layouts(redis, names) == {b"4"}
        before = len(receiver.received)
        await until(polled(sims, 3), timeout=30)  # events keep flowing through 4 partitions
        await receiver.wait_for(before + 5, timeout=30)
        streams = await drain(sims, redis, [receiver])
        tally.events = sum(len(events) for events in streams.values())
        assert [await a4.stop(), await b4.stop()] == [0, 0]
        for name, sim in sims.items():
            assert await verify(sim, redis, name) == streams[name]
        assert await layouts(redis, names) == {b"4"}
        for name in names:
            groups = await redis.xinfo_groups(ClusterKeys(PREFIX, name).events)
            assert {g["name"].decode() for g in groups} == {f"sink:hooks:{k}" for k in range(4)}
            assert all(g["pending"] == 0 for g in groups)
    assert_delivered(receiver, streams, once=True)  # graceful stops only: nothing twice
    assert a4.logged("sink.partitions_changed")
    assert len(arrivals(receiver)) == sum(len(events) for events in streams.values())
