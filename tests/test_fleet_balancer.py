"""The fleet's rounds (fleet/balancer.py, fleet/registry.py) against a real redis-server: the
share converges through clean hand-overs, joins and leaves rebalance, outages change nothing."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest
import structlog.testing
from redis.asyncio import Redis, RedisCluster

from notifier.fleet import OPEN, Fleet, Gate, cap, plan, replicas_key
from notifier.keys import ClusterKeys
from notifier.lease import Lease
from notifier.metrics import Metrics

if TYPE_CHECKING:
    from notifier.redis_client import AnyRedis
    from testkit.redis_procs import RedisCluster3, RedisServer

pytestmark = pytest.mark.timeout(10)

PREFIX = "t"
TTL = 30.0  # rounds are stepped by hand in most tests: nothing runs out meanwhile
CLUSTERS = ("c1", "c2", "c3", "c4")


def lease_keys(names: tuple[str, ...] = CLUSTERS) -> dict[str, str]:
    """Lease name -> key, one hash slot each (as a poller per cluster has)."""
    return {name: ClusterKeys(PREFIX, name).lease for name in names}


class Replica:
    """A fleet member and the lease loops it would run: each takes its lease when its gate
    says so, renews it, and gives it back when the gate says so."""

    def __init__(
        self,
        redis: AnyRedis,
        owner: str,
        names: tuple[str, ...] = CLUSTERS,
        *,
        ttl: float = TTL,
        metrics: Metrics | None = None,
    ) -> None:
        self.owner = owner
        self.fleet = Fleet(redis, PREFIX, owner, ttl=ttl, metrics=metrics)
        self.gates = self.fleet.register("pollers", lease_keys(names))
        self.leases = {
            name: Lease(redis, keys.lease, keys.fence, owner, ttl=ttl)
            for name, keys in ((n, ClusterKeys(PREFIX, n)) for n in names)
        }

    async def act(self) -> None:
        """One turn of every lease loop."""
        for name, lease in self.leases.items():
            gate = self.gates[name]
            if lease.held and gate.should_give():
                await lease.release()
                gate.handed_over()
            elif lease.held or gate.may_take():
                await lease.acquire()

    @property
    def held(self) -> set[str]:
        return {name for name, lease in self.leases.items() if lease.held}

    async def stop(self) -> None:
        """A clean stop: leases released, the registry left."""
        for lease in self.leases.values():
            await lease.release()
        stop = asyncio.Event()
        stop.set()
        await self.fleet.run(stop)


async def rounds(replicas: list[Replica], count: int) -> None:
    """``count`` rounds: every fleet decides, then every lease loop acts."""
    for _ in range(count):
        for replica in replicas:
            await replica.fleet.round()
        for replica in replicas:
            await replica.act()


def assert_balanced(replicas: list[Replica]) -> None:
    """Every lease held once, nobody over the cap."""
    held = [name for replica in replicas for name in replica.held]
    assert sorted(held) == sorted(CLUSTERS)
    most = cap(len(CLUSTERS), len(replicas))
    assert all(len(replica.held) <= most for replica in replicas), [r.held for r in replicas]


async def test_a_replica_alone_may_take_every_lease_from_the_start(redis: Redis) -> None:
    """Before any round the gates are open; after its first round a lone replica is given
    every lease and never asked to give one: the product before there was a fleet."""
    alone = Replica(redis, "a")
    assert all(g.may_take() and not g.should_give() for g in alone.gates.values())
    await alone.fleet.start()
    await rounds([alone], 3)
    assert alone.held == set(CLUSTERS)
    assert all(g.may_take() and not g.should_give() for g in alone.gates.values())
    assert alone.fleet.live == ("a",)
    assert OPEN.may_take()
    assert not OPEN.should_give()


async def test_two_replicas_share_four_leases_two_each_through_hand_overs(redis: Redis) -> None:
    """A holds all four; B joins: within a few rounds each holds the two the share gives it,
    A having handed two over (counted), and the gauges say so."""
    metrics = Metrics()
    a, b = Replica(redis, "a", metrics=metrics), Replica(redis, "b")
    await a.fleet.start()
    await rounds([a], 1)
    assert a.held == set(CLUSTERS)
    await b.fleet.start()
    await rounds([a, b], 5)
    share = plan(CLUSTERS, ["a", "b"])
    assert a.held == {n for n, o in share.items() if o == "a"}
    assert b.held == {n for n, o in share.items() if o == "b"}
    assert (len(a.held), len(b.held)) == (2, 2)
    sample = metrics.registry.get_sample_value
    assert sample("notifier_handovers_total", {"kind": "pollers"}) == 2
    await rounds([a, b], 1)  # the gauges describe the last round
    assert sample("notifier_leases_held", {"kind": "pollers"}) == 2
    assert sample("notifier_lease_cap", {"kind": "pollers"}) == 2
    assert sample("notifier_fleet_replicas", None) == 2
    await rounds([a, b], 3)  # stable: no more hand-overs
    assert sample("notifier_handovers_total", {"kind": "pollers"}) == 2


async def test_a_held_lease_is_given_only_after_two_rounds_planned_elsewhere(redis: Redis) -> None:
    """Hysteresis: the round that first sees B does not ask A to give; the second does."""
    a, b = Replica(redis, "a"), Replica(redis, "b")
    await rounds([a], 1)
    await b.fleet.round()
    await a.fleet.round()
    assert not any(g.should_give() for g in a.gates.values())
    await a.fleet.round()
    giving = {name for name, g in a.gates.items() if g.should_give()}
    assert giving == {n for n, o in plan(CLUSTERS, ["a", "b"]).items() if o == "b"}
    assert all(b.gates[name].may_take() for name in giving)


async def test_a_holder_within_the_cap_keeps_its_lease_when_the_planned_owner_returns(
    redis: Redis,
) -> None:
    """One lease, two replicas: the one the share does not pick holds it (the other was
    paused); when the other is back, nothing moves: a hand-over would not improve the balance."""
    names = ("c1",)
    planned = plan(names, ["a", "b"])["c1"]
    other = "b" if planned == "a" else "a"
    holding, back = Replica(redis, other, names), Replica(redis, planned, names)
    await rounds([holding], 1)
    await rounds([holding, back], 5)
    assert (holding.held, back.held) == ({"c1"}, set())
    assert not holding.gates["c1"].should_give()


async def test_a_third_replica_joins_and_nobody_holds_more_than_the_cap(redis: Redis) -> None:
    """2 + 2, then C joins: within a few rounds the cap (2 of 4 over 3) holds for all, every
    lease is held once, and C holds its share."""
    a, b = Replica(redis, "a"), Replica(redis, "b")
    await rounds([a, b], 5)
    c = Replica(redis, "c")
    await rounds([a, b, c], 6)
    assert_balanced([a, b, c])
    assert c.held == {n for n, o in plan(CLUSTERS, ["a", "b", "c"]).items() if o == "c"}
    assert a.fleet.live == ("a", "b", "c")


async def test_a_replica_that_stops_cleanly_leaves_its_leases_to_the_others(
    redis: Redis,
) -> None:
    """B stops (leases released, registry left): A's next round counts one replica and may
    take all four, and takes them."""
    a, b = Replica(redis, "a"), Replica(redis, "b")
    await rounds([a, b], 5)
    assert len(a.held) == 2
    await b.stop()
    assert await redis.zrange(replicas_key(PREFIX, "pollers"), 0, -1) == [b"a"]
    await rounds([a], 1)
    assert all(g.may_take() for g in a.gates.values())
    assert a.held == set(CLUSTERS)
    assert a.fleet.live == ("a",)


async def test_a_dead_replicas_heartbeat_runs_out_and_its_leases_are_taken(
    redis: Redis,
) -> None:
    """B dies (no more beats, no more renewals; TTL 0.4 s): within about a TTL and a few
    rounds A holds all four."""
    a, b = Replica(redis, "a", ttl=0.4), Replica(redis, "b", ttl=0.4)
    await rounds([a, b], 5)
    assert len(b.held) == 2
    deadline = time.monotonic() + 5
    while a.held != set(CLUSTERS):
        assert time.monotonic() < deadline, a.held
        await rounds([a], 1)
        await asyncio.sleep(0.05)  # (the pace of rounds, not a synchronisation)
    assert a.fleet.live == ("a",)


async def test_a_free_lease_planned_for_an_idle_replica_is_taken_after_two_rounds(
    redis: Redis,
) -> None:
    """3 leases, 2 replicas (cap 2): the replica given two beats but never takes them; once
    they have been seen free for two rounds, the other (one under the cap) may take one."""
    names = ("c1", "c2", "c3")
    share = plan(names, ["a", "b"])
    idle = "a" if list(share.values()).count("a") == 2 else "b"
    active = Replica(redis, "b" if idle == "a" else "a", names)
    silent = Replica(redis, idle, names)
    theirs = {n for n, o in share.items() if o == idle}
    await silent.fleet.round()
    await rounds([active], 1)
    assert not any(active.gates[name].may_take() for name in theirs)
    await silent.fleet.round()
    await rounds([active], 1)
    assert len([name for name in theirs if active.gates[name].may_take()]) == 1
    assert len(active.held) == 2
    await silent.fleet.round()
    await rounds([active], 3)
    assert len(active.held) == 2  # never over the cap: the idle replica's other lease waits


async def test_a_redis_outage_keeps_the_last_decisions_and_is_said_once(
    redis_server: RedisServer, redis: Redis
) -> None:
    """Redis stops: rounds raise nothing, the gates keep their answers, one warning; when it
    is back, one info line and the rounds decide again."""
    a, b = Replica(redis, "a"), Replica(redis, "b")
    await rounds([a, b], 5)
    before = {name: (g.may_take(), g.should_give()) for name, g in a.gates.items()}
    with structlog.testing.capture_logs() as logs:
        redis_server.stop()
        for _ in range(3):
            await a.fleet.round()
        assert {name: (g.may_take(), g.should_give()) for name, g in a.gates.items()} == before
        redis_server.start()
        deadline = time.monotonic() + 5
        while not any(e["event"] == "fleet.redis_recovered" for e in logs):
            assert time.monotonic() < deadline
            await a.fleet.round()
    down = [e for e in logs if e["event"] == "fleet.redis_unavailable"]
    assert len(down) == 1
    assert down[0]["log_level"] == "warning"
    assert len([e for e in logs if e["event"] == "fleet.redis_recovered"]) == 1


async def test_a_fleet_with_no_redis_at_start_behaves_as_before_the_fleet(
    redis_server: RedisServer,
) -> None:
    """start() with Redis away raises nothing and leaves every gate open, never giving."""
    redis_server.stop()
    client = Redis.from_url(redis_server.url, socket_connect_timeout=0.5)
    try:
        alone = Replica(client, "a")
        await alone.fleet.start()
        assert all(g.may_take() and not g.should_give() for g in alone.gates.values())
    finally:
        await client.aclose()


async def test_run_beats_on_schedule_logs_the_live_set_and_leaves_on_stop(redis: Redis) -> None:
    """run() every ttl/3: B's fleet sees A arrive (one ``fleet.replicas`` line per change);
    when A's stop is set it leaves the registry at once."""
    key = replicas_key(PREFIX, "pollers")
    a, b = Replica(redis, "a", ttl=0.3), Replica(redis, "b", ttl=0.3)
    stop_a, stop_b = asyncio.Event(), asyncio.Event()
    with structlog.testing.capture_logs() as logs:
        await b.fleet.start()
        run_b = asyncio.create_task(b.fleet.run(stop_b))
        run_a = asyncio.create_task(a.fleet.run(stop_a))
        deadline = time.monotonic() + 5
        while b.fleet.live != ("a", "b"):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        stop_a.set()
        await run_a
        assert await redis.zrange(key, 0, -1) == [b"b"]
        while list(b.fleet.live) != ["b"]:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        stop_b.set()
        await run_b
    seen = [e["replicas"] for e in logs if e["event"] == "fleet.replicas" and e["owner"] == "b"]
    assert seen == [["b"], ["a", "b"], ["b"]]
    assert await redis.exists(key) == 0


async def test_a_gate_subclass_steers_a_lease_loop(redis: Redis) -> None:
    """The Gate base class is the open gate; a subclass says otherwise (as tests do)."""

    class Closed(Gate):
        def may_take(self) -> bool:
            return False

    assert not Closed().may_take()
    assert not Closed().should_give()
    Closed().handed_over()


@pytest.mark.timeout(30)
async def test_the_fleet_shares_leases_on_a_redis_cluster(redis_cluster: RedisCluster3) -> None:
    """On three masters (lease keys in different slots, one registry key): 2 + 2, then a clean
    stop leaves all four to the other."""
    client = RedisCluster.from_url(redis_cluster.url)
    try:
        a, b = Replica(client, "a"), Replica(client, "b")
        await a.fleet.start()
        await b.fleet.start()
        await rounds([a, b], 5)
        assert_balanced([a, b])
        assert (len(a.held), len(b.held)) == (2, 2)
        await b.stop()
        await rounds([a], 1)
        assert a.held == set(CLUSTERS)
    finally:
        await client.aclose()
