"""`notifier run --role poller` as real processes: SIGKILL, replicas, a paused leader (Redis
faults: tests/test_redis_faults.py)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import pytest
from redis.exceptions import RedisError

from notifier.config import DetectionSettings
from notifier.keys import ClusterKeys
from notifier.lease import owner_of
from notifier.simulator import Faults, PopulationSettings, SimulatorSettings
from testkit.detection_support import (
    Lockstep,
    assert_streams_causal,
    assert_well_formed,
    expected_events,
    lockstep,
    stream_events,
)
from testkit.fleet_support import Replica

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from redis.asyncio import Redis

    from testkit.redis_procs import RedisServer
    from testkit.reliability import Tally

KEYS = ClusterKeys("notifier", "sim")
LEASE = 1.0
DETECTION = DetectionSettings.model_validate({"leader_lease": LEASE})
POPULATION = PopulationSettings(
    seed=21, viewers=120, join_rate=0.06, leave_rate=0.06, health_change_rate=0.3, no_data_rate=0.1
)
SIM = SimulatorSettings(population=POPULATION, static_tokens=("tok-sim",))


def faults() -> Faults:
    """Some 5xx and bad bodies on capped pages: retried, never visible in the result."""
    return Faults(seed=8, max_rows_per_page=30, error_rate=0.03, malformed_rate=0.03)


async def holder(redis: Redis) -> str:
    """Who holds the cluster's lease (``host-pid-random:token``), or ''."""
    value = await redis.get(KEYS.lease)
    return value.decode() if isinstance(value, bytes) else ""


def write_config(
    tmp_path: Path, url: str, redis_url: str, *, cluster: bool = False, commit_chunk: int = 2000
) -> Path:
    path = tmp_path / "notifier.yaml"
    path.write_text(
        f"redis: {{url: '{redis_url}', cluster: {str(cluster).lower()}}}\n"
        "clusters:\n"
        "  - name: sim\n"
        f"    base_url: {url}\n"
        "    auth: {token: tok-sim}\n"  # restarts would trip the 5 logins/minute limit
        "    poll_interval: 100ms\n"
        "    poll_budget: 10s\n"
        "    timeout: 2s\n"
        f"detection: {{leader_lease: {LEASE}s, commit_chunk: {commit_chunk}}}\n"
        "logging: {format: json, level: info}\n"
    )
    return path


@asynccontextmanager
async def services(config: Path, log: Path, count: int = 1) -> AsyncIterator[list[Replica]]:
    """``count`` `notifier run --role poller` processes sharing one log file."""
    started = [Replica(config, log, role="poller") for _ in range(count)]
    try:
        for service in started:
            await service.start()
        yield started
    finally:
        for service in started:
            await service.ensure_dead()


async def wait_for_polls(sim: Lockstep, at_least: int, timeout: float = 60) -> int:
    """Until the cluster has `at_least` committed polls (checked every 20 ms).

    The test's own client may meet a connection that died in an outage the test caused: that
    reads as "not yet", until the deadline.
    """
    deadline = time.monotonic() + timeout
    polls = -1
    while polls < at_least:
        assert time.monotonic() < deadline, f"only {polls} polls committed"
        try:
            polls = await sim.polls()
        except RedisError:
            polls = -1
        if polls < at_least:
            await asyncio.sleep(0.02)
    return polls


def lifecycle(events: list[dict[str, Any]]) -> dict[str, list[tuple[str, Any]]]:
    """Per viewer: (type, threshold) in order; records are compared where exact."""
    out: dict[str, list[tuple[str, Any]]] = {}
    for event in events:
        if event["type"].startswith("viewer."):  # stream events: tests/test_stream_events.py
            out.setdefault(event["subject"], []).append(
                (event["type"], event["data"].get("threshold"))
            )
    return out


def expected_lifecycle(sim: Lockstep, final: int) -> dict[str, list[tuple[str, Any]]]:
    expected = expected_events(sim.states[:final], DETECTION)
    return {
        vid: [(kind, data.get("threshold")) for kind, data in items]
        for vid, items in expected.items()
    }


async def verify(sim: Lockstep, redis: Redis) -> int:
    """Stream == rules over the states each committed poll saw: nothing lost, nothing twice."""
    final = await sim.polls()
    events = await stream_events(redis, KEYS.events)
    assert_well_formed(events, "sim")
    assert_streams_causal(events)
    assert lifecycle(events) == expected_lifecycle(sim, final)
    expected = expected_events(sim.states[:final], DETECTION)
    for event in events:  # connected events carry the record of the poll that saw them
        if event["type"] == "viewer.connected":
            assert (
                next(d for k, d in expected[event["subject"]] if k == event["type"])
                == (event["data"])
            )
    return len(events)


VALID_NEXT = {
    None: {"viewer.connected"},
    "viewer.connected": {"viewer.health_dropped", "viewer.disconnected"},
    "viewer.health_dropped": {"viewer.health_recovered", "viewer.disconnected"},
    "viewer.health_recovered": {"viewer.health_dropped", "viewer.disconnected"},
    "viewer.disconnected": set(),
}


async def verify_rederived(sim: Lockstep, redis: Redis) -> int:
    """The stream after polls whose last chunks were lost and re-derived from the next state:
    nothing twice, every session in causal order, none invented, none of three polls or more
    lost, and the viewers still watching at the end are tracked."""
    final = await sim.polls()
    events = await stream_events(redis, KEYS.events)
    assert_well_formed(events, "sim")
    assert_streams_causal(events)
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    assert len({e["id"] for e in events}) == len(events)
    seen_in: dict[str, list[int]] = {}
    for at, records in enumerate(sim.states[:final]):
        for record in records:
            seen_in.setdefault(record["id"], []).append(at)
    for subject, kinds in lifecycle(events).items():
        assert subject in seen_in, subject  # no invented viewer
        previous = None
        for kind, _ in kinds:
            assert kind in VALID_NEXT[previous], (subject, kinds)
            previous = kind
    connected = {e["subject"] for e in events if e["type"] == "viewer.connected"}
    for subject, polls in seen_in.items():
        if len(polls) >= 3:
            assert subject in connected, subject
    last = {record["id"] for record in sim.states[final - 1]}
    ended = {e["subject"] for e in events if e["type"] == "viewer.disconnected"}
    assert {v for v in last if len(seen_in[v]) >= 3} <= connected - ended
    return len(events)


@pytest.mark.timeout(180)
@pytest.mark.reliability(
    fault="Poller killed at random moments",
    injected=(
        "SIGKILL of notifier run --role poller at a random moment of a random poll, 12 times, "
        "restarted each time; Storm also answers some 5xx and bad bodies"
    ),
    checked=(
        "the stream is exactly the rules over the states the committed polls saw (a lockstep "
        "simulator): every event once, in order, with its record"
    ),
)
async def test_sigkill_at_random_moments_loses_and_duplicates_nothing(
    tmp_path: Path, redis_server: RedisServer, redis: Redis, tally: Tally
) -> None:
    """Twelve SIGKILLs at random moments and restarts: the stream is exactly the ground truth."""
    chaos = random.Random(1234)
    async with lockstep(SIM, faults(), redis_server.url, KEYS) as sim:
        config = write_config(tmp_path, sim.url, redis_server.url)
        for _ in range(12):
            async with services(config, tmp_path / "run.log") as (service,):
                before = await sim.polls()
                await wait_for_polls(sim, before + chaos.randint(0, 2))
                await asyncio.sleep(chaos.uniform(0, 0.25))  # the chaos: a random moment
                await service.kill()
                tally.tried += 1
        async with services(config, tmp_path / "run.log") as (service,):
            await wait_for_polls(sim, await sim.polls() + 3)
            assert await service.stop() == 0
        assert await sim.polls() >= 10
        tally.events = await verify(sim, redis)


async def half_committed(redis: Redis) -> bool:
    """Some chunks of a poll are written and the rest are not (yet)."""
    value = await redis.hget(KEYS.meta, "commit")
    commit = value.decode() if isinstance(value, bytes) else ""
    if "/" not in commit:
        return False
    done, total = commit.rsplit(":", 1)[1].split("/")
    return int(done) < int(total)


@pytest.mark.timeout(180)
@pytest.mark.reliability(
    fault="Poller killed between the chunks of a commit",
    injected=(
        "polls written in chunks of 10; SIGKILL while Redis shows a commit half written, 10 times"
    ),
    checked=(
        "the next leader re-derives what the lost chunks held: no event twice, every session "
        "causal, none invented, no viewer of 3 polls or more lost"
    ),
)
async def test_sigkill_between_the_chunks_of_a_commit_loses_and_duplicates_nothing(
    tmp_path: Path, redis_server: RedisServer, redis: Redis, tally: Tally
) -> None:
    """Every poll is written in chunks of 10; SIGKILL while one is half written, ten times:
    the next leader's polls emit what the lost chunks held, and the stream is the ground truth."""
    hits = 0
    async with lockstep(SIM, faults(), redis_server.url, KEYS) as sim:
        config = write_config(tmp_path, sim.url, redis_server.url, commit_chunk=10)
        for _ in range(10):
            async with services(config, tmp_path / "run.log") as (service,):
                await wait_for_polls(sim, await sim.polls() + 1)
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and not await half_committed(redis):
                    pass  # watch Redis for the moment, then kill
                await service.kill()
                tally.tried += 1
            hits += await half_committed(redis)
        async with services(config, tmp_path / "run.log") as (service,):
            await wait_for_polls(sim, await sim.polls() + 3)
            assert await service.stop() == 0
            # (not before the stop: a poll counts at its first chunk, so the one just counted
            # may still be half written) A stop finishes the commit in hand.
            assert not await half_committed(redis)
        tally.events = await verify_rederived(sim, redis)
    # A kill did land between chunks (several of the ten in trials; chunks are pipelined, so the
    # moment is short: the stop at a chosen chunk is covered deterministically in
    # test_chunked_commit.py and test_stream_events.py).
    assert hits >= 1, hits


@pytest.mark.timeout(120)
@pytest.mark.reliability(
    fault="The leading replica dies",
    injected="two poller replicas; SIGKILL of the one holding the lease",
    checked=(
        "the other leads within 2 lease times; the stream is exactly the ground truth; the "
        "standby said once whom it stood by for"
    ),
)
async def test_a_replica_takes_over_within_two_lease_times(
    tmp_path: Path, redis_server: RedisServer, redis: Redis, tally: Tally
) -> None:
    """Two replicas: one leads, the other says once that it stands by; SIGKILL the leader and
    the other leads within 2x the lease, losslessly, and the status names it."""
    async with lockstep(SIM, faults(), redis_server.url, KEYS) as sim:
        config = write_config(tmp_path, sim.url, redis_server.url)
        async with services(config, tmp_path / "run.log", count=2) as replicas:
            await wait_for_polls(sim, 5)
            leading = await holder(redis)
            while await redis.hget(KEYS.status, "owner") != owner_of(leading).encode():
                await asyncio.sleep(0.01)  # the status of the leader's latest poll
            leader = next(r for r in replicas if f"-{r.pid}-" in leading)
            other = next(r for r in replicas if r is not leader)
            killed_at = time.monotonic()
            await leader.kill()
            tally.tried += 1
            while f"-{other.pid}-" not in await holder(redis):
                assert time.monotonic() - killed_at < 2 * LEASE, "no takeover within 2x lease"
                await asyncio.sleep(0.01)
            await wait_for_polls(sim, await sim.polls() + 5)
            assert await other.stop() == 0
        tally.events = await verify(sim, redis)
    owner = await redis.hget(KEYS.status, "owner")
    assert isinstance(owner, bytes)
    assert f"-{other.pid}-" in owner.decode()
    log = [json.loads(line) for line in (tmp_path / "run.log").read_text().splitlines()]
    standing = [entry for entry in log if entry["event"] == "poller.standing_by"]
    assert [entry["holder"] for entry in standing] == [owner_of(leading)]


@pytest.mark.timeout(120)
@pytest.mark.reliability(
    fault="The leader freezes past its lease",
    injected=(
        "SIGSTOP of the leading replica until the other takes over and commits 4 polls, then "
        "SIGCONT"
    ),
    checked="nothing the woken leader does counts (fenced); the stream is exactly the ground truth",
)
async def test_a_paused_leader_is_fenced_when_it_wakes(
    tmp_path: Path, redis_server: RedisServer, redis: Redis, tally: Tally
) -> None:
    """A leader frozen past its lease (SIGSTOP) wakes to a new leader: nothing it does counts."""
    async with lockstep(SIM, faults(), redis_server.url, KEYS) as sim:
        config = write_config(tmp_path, sim.url, redis_server.url)
        async with services(config, tmp_path / "run.log", count=2) as replicas:
            await wait_for_polls(sim, 4)
            leading = await holder(redis)
            leader = next(r for r in replicas if f"-{r.pid}-" in leading)
            other = next(r for r in replicas if r is not leader)
            os.kill(leader.pid, signal.SIGSTOP)
            tally.tried += 1
            try:
                while f"-{other.pid}-" not in await holder(redis):
                    await asyncio.sleep(0.01)
                await wait_for_polls(sim, await sim.polls() + 4)
            finally:
                os.kill(leader.pid, signal.SIGCONT)
            await wait_for_polls(sim, await sim.polls() + 6)
            assert f"-{other.pid}-" in await holder(redis)
            for replica in replicas:
                assert await replica.stop() == 0
        tally.events = await verify(sim, redis)
    log = (tmp_path / "run.log").read_text()
    assert "poller.following" in log
