"""A poller hands its cluster over between two polls when the fleet says so (detect/
leadership.py): newest records saved, lease released, the other replica carries on; the stream
equals the ground truth across hand-overs, nothing lost, nothing twice."""

from __future__ import annotations

import asyncio
import functools
import time
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import pytest
import structlog.testing

from notifier.config import DetectionSettings
from notifier.detect.poller import Poller
from notifier.detect.store import StateStore
from notifier.fleet import Gate
from notifier.keys import ClusterKeys
from notifier.lease import Lease
from notifier.metrics import Metrics
from notifier.simulator import Faults, PopulationSettings, SimulatorSettings
from notifier.storm import StormClient, create_session
from testkit.detection_support import (
    Lockstep,
    actual_events,
    assert_streams_causal,
    assert_well_formed,
    expected_events,
    lockstep,
    stream_events,
)

from .conftest import FAST_BACKOFF, cluster_settings

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping, Sequence

    from redis.asyncio import Redis

KEYS = ClusterKeys("t", "sim")
DETECTION = DetectionSettings.model_validate({"leader_lease": "1s"})
POPULATION = PopulationSettings(
    seed=11, viewers=80, join_rate=0.08, leave_rate=0.08, health_change_rate=0.3, streams=4
)
SIM = SimulatorSettings(population=POPULATION, static_tokens=("tok-sim",))
pytestmark = pytest.mark.timeout(10)


class Flip(Gate):
    """A fleet gate the test sets by hand."""

    def __init__(self, *, take: bool) -> None:
        self.take, self.give, self.handovers = take, False, 0

    def may_take(self) -> bool:
        return self.take

    def should_give(self) -> bool:
        return self.give

    def handed_over(self) -> None:
        self.give = False
        self.handovers += 1

    def to(self, other: Flip) -> None:
        """Give the lease to ``other``'s replica: this one gives and no longer takes."""
        self.take, self.give, other.take = False, True, True


async def replica(
    stack: AsyncExitStack, sim: Lockstep, redis: Redis, owner: str, gate: Gate
) -> Poller:
    """A poller of the lockstep simulator on ``redis``, owner ``owner``, behind ``gate``."""
    settings = cluster_settings(sim.url, auth={"token": "tok-sim"}, poll_interval="50ms")
    session = await stack.enter_async_context(create_session(settings))
    client = StormClient(settings, session, backoff=FAST_BACKOFF)
    stack.push_async_callback(client.aclose)
    return Poller(
        settings,
        DETECTION,
        client=client,
        store=StateStore(redis, KEYS, maxlen=100_000),
        lease=Lease(redis, KEYS.lease, KEYS.fence, owner, ttl=DETECTION.leader_lease),
        metrics=Metrics(),
        gate=gate,
    )


async def holder(redis: Redis) -> str:
    """The owner id holding the cluster's lease, or ''."""
    value = await redis.get(KEYS.lease)
    return value.decode().rsplit(":", 1)[0] if isinstance(value, bytes) else ""


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 6) -> None:
    """Until ``await check()`` is true, looked at every 10 ms (fails after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def polls_reach(sim: Lockstep, count: int) -> bool:
    return await sim.polls() >= count


async def led_by(redis: Redis, owner: str) -> bool:
    return await holder(redis) == owner


async def verify(sim: Lockstep, redis: Redis) -> None:
    """The stream is the rules over every state a committed poll saw: nothing lost or twice."""
    final = await sim.polls()
    events = await stream_events(redis, KEYS.events)
    assert_well_formed(events, "sim")
    assert_streams_causal(events)
    assert actual_events(events) == expected_events(sim.states[:final], DETECTION)


def named(logs: Sequence[MutableMapping[str, Any]], *names: str) -> list[str]:
    return [entry["event"] for entry in logs if entry["event"] in names]


async def test_a_leader_hands_over_between_polls_and_the_other_carries_on(
    redis_url: str, redis: Redis
) -> None:
    """A leads five polls; the fleet gives the cluster to B: B stands by while A holds it, A
    saves and releases at its next slot instead of polling, B leads five polls; and back."""
    gate_a, gate_b = Flip(take=True), Flip(take=False)
    with structlog.testing.capture_logs() as logs:
        async with lockstep(SIM, Faults(), redis_url, KEYS) as sim, AsyncExitStack() as stack:
            a = await replica(stack, sim, redis, "a", gate_a)
            b = await replica(stack, sim, redis, "b", gate_b)
            await b.cycle()  # the gate is shut: B does not even try
            for _ in range(5):
                await a.cycle()
            assert (await sim.polls(), await holder(redis), b.commits) == (5, "a", 0)
            gate_a.to(gate_b)
            await b.cycle()  # A still holds it: B stands by
            assert await holder(redis) == "a"
            await a.cycle()  # the hand-over, not a poll
            assert (await sim.polls(), await holder(redis), gate_a.handovers) == (5, "", 1)
            await a.cycle()  # A's gate is shut now: it stands by
            for _ in range(5):
                await b.cycle()
            assert (await sim.polls(), await holder(redis), b.commits) == (10, "b", 5)
            gate_b.to(gate_a)
            await b.cycle()
            for _ in range(5):
                await a.cycle()
            assert (await sim.polls(), await holder(redis), a.commits) == (15, "a", 10)
            await a.close()
            await b.close()
            await verify(sim, redis)
    a_lines = [e for e in logs if e.get("cluster") == "sim"]
    assert named(a_lines, "poller.handing_over", "poller.checkpoint", "poller.handed_over") == [
        "poller.handing_over",
        "poller.checkpoint",
        "poller.handed_over",
    ] * 2 + ["poller.checkpoint"]  # (the clean stop at the end)
    assert not named(logs, "poller.following", "poller.commit_fenced", "poller.poll_dropped")
    checkpoints = [e for e in logs if e["event"] == "poller.checkpoint"]
    assert all(e["outcome"] == "ok" for e in checkpoints)
    handed = [e for e in logs if e["event"] == "poller.handed_over"]
    assert all(e["log_level"] == "info" for e in handed)


async def test_hand_overs_under_running_pollers_lose_nothing_and_emit_nothing_twice(
    redis_url: str, redis: Redis
) -> None:
    """Both pollers run on their own schedules (50 ms); the cluster is handed A -> B -> A
    while they poll: every hand-over falls between two polls, and the stream is the truth."""
    gate_a, gate_b = Flip(take=True), Flip(take=False)
    stop = asyncio.Event()
    with structlog.testing.capture_logs() as logs:
        async with lockstep(SIM, Faults(), redis_url, KEYS) as sim, AsyncExitStack() as stack:
            a = await replica(stack, sim, redis, "a", gate_a)
            b = await replica(stack, sim, redis, "b", gate_b)
            tasks = [asyncio.create_task(p.run(stop)) for p in (a, b)]
            try:
                await until(functools.partial(polls_reach, sim, 5))
                for giver, taker, owner in ((gate_a, gate_b, "b"), (gate_b, gate_a, "a")):
                    giver.to(taker)
                    await until(functools.partial(led_by, redis, owner))
                    target = await sim.polls() + 5
                    await until(functools.partial(polls_reach, sim, target))
            finally:
                stop.set()
                await asyncio.gather(*tasks)
            await verify(sim, redis)
    assert (gate_a.handovers, gate_b.handovers) == (1, 1)
    assert a.commits + b.commits == await sim.polls()  # every committed poll is theirs
    assert b.commits >= 5
    assert not named(logs, "poller.following", "poller.commit_fenced", "poller.poll_dropped")
