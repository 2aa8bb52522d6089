"""Ground truth for fault tests that let the notifier keep polling through the fault
(tests/test_redis_faults.py).

``EveryPoll`` moves its population on one step at every poll it serves, Redis or no Redis,
and keeps what each poll saw: while Redis is away the population goes on changing (viewers
join, leave, drop and recover), as a real audience does. With no Storm faults every poll the
notifier starts is complete, so poll ``n`` of the cluster (``meta.polls``) saw ``states[n]``,
and the stream must be exactly what the rules give over those states: nothing detected during
an outage lost, nothing twice, nothing invented.

``Notifier`` is one `notifier run` (poller, a webhook sink, the endpoint) as a real process,
with its ``/readyz`` probed from outside.
"""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from redis.exceptions import RedisError

from notifier.simulator import Faults, Simulator
from testkit.detection_support import (
    Handler,
    assert_streams_causal,
    assert_well_formed,
    expected_events,
    gated,
    stream_events,
)
from testkit.fleet_support import Replica

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from notifier.config import DetectionSettings
    from notifier.keys import ClusterKeys
    from notifier.redis_client import AnyRedis
    from notifier.simulator import SimulatorSettings

__all__ = ["EveryPoll", "Notifier", "every_poll", "polls_committed", "verify_exact"]


@dataclass(repr=False)
class EveryPoll:
    """A simulator whose population moves one step per poll served (module doc)."""

    simulator: Simulator
    url: str = ""
    states: list[list[dict[str, Any]]] = field(default_factory=list)
    served: int = 0  # polls started (first pages served)
    served_at: list[float] = field(default_factory=list)  # wall-clock seconds, per poll

    async def gate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/api/cluster/viewers" and request.query.get("page", "1") == "1":
            if self.served:
                self.simulator.population.step()
                self.states.append(self.simulator.population.records())
            self.served += 1
            self.served_at.append(time.time())
        return await handler(request)

    def polls_between(self, start: float, end: float) -> range:
        """The polls (by number) that started between two wall-clock times."""
        numbers = [n for n, at in enumerate(self.served_at) if start <= at <= end]
        return range(numbers[0], numbers[-1] + 1) if numbers else range(0)


@asynccontextmanager
async def every_poll(settings: SimulatorSettings) -> AsyncIterator[EveryPoll]:
    """Serve an ``EveryPoll`` simulator (no Storm faults) on 127.0.0.1."""
    simulator = Simulator(settings, Faults())
    stepper = EveryPoll(simulator)
    stepper.states.append(simulator.population.records())
    async with gated(simulator, stepper.gate) as url:
        stepper.url = url
        yield stepper


async def polls_committed(redis: AnyRedis, keys: ClusterKeys) -> int:
    """``meta.polls``; -1 while Redis does not answer (the test's own client meets the fault)."""
    try:
        return int(await redis.hget(keys.meta, "polls") or 0)
    except (RedisError, OSError):
        return -1


def _lifecycle(events: list[dict[str, Any]]) -> dict[str, list[tuple[str, Any]]]:
    out: dict[str, list[tuple[str, Any]]] = {}
    for event in events:
        if event["type"].startswith("viewer."):
            out.setdefault(event["subject"], []).append(
                (event["type"], event["data"].get("threshold"))
            )
    return out


async def verify_exact(
    sim: EveryPoll, redis: AnyRedis, keys: ClusterKeys, detection: DetectionSettings
) -> list[dict[str, Any]]:
    """The stream is the rules over the states the committed polls saw, exactly: every viewer's
    events in order, the records of its connects, sequences 1..n with no gap, no id twice.
    Returns the stream's events."""
    final = await polls_committed(redis, keys)
    assert 0 < final <= len(sim.states)
    events = await stream_events(redis, keys.events)
    assert_well_formed(events, keys.cluster)
    assert_streams_causal(events)
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    assert len({e["id"] for e in events}) == len(events)
    expected = expected_events(sim.states[:final], detection)
    want = {
        viewer: [(kind, data.get("threshold")) for kind, data in items]
        for viewer, items in expected.items()
    }
    got = _lifecycle(events)
    lost = sum(max(len(want[v]) - len(got.get(v, [])), 0) for v in want)
    extra = sum(max(len(got[v]) - len(want.get(v, [])), 0) for v in got)
    assert got == want, f"{lost} events lost, {extra} extra"
    for event in events:
        if event["type"] == "viewer.connected":
            record = next(d for k, d in expected[event["subject"]] if k == event["type"])
            assert record == event["data"]
    return events


@dataclass
class Notifier:
    """One `notifier run --role all` process and the base URL of its endpoint."""

    replica: Replica
    base: str = ""

    async def readiness(self, http: aiohttp.ClientSession) -> int:
        """The status of ``GET /readyz`` (0 when the endpoint does not answer)."""
        try:
            async with http.get(f"{self.base}/readyz") as response:
                await response.read()
                return response.status
        except (aiohttp.ClientError, TimeoutError):
            return 0

    async def until_readiness(
        self, http: aiohttp.ClientSession, status: int, timeout: float = 30
    ) -> None:
        """Until ``/readyz`` answers ``status`` (checked every 50 ms)."""
        deadline = time.monotonic() + timeout
        while (got := await self.readiness(http)) != status:
            assert time.monotonic() < deadline, f"/readyz still {got}, not {status}"
            await asyncio.sleep(0.05)


@asynccontextmanager
async def notifier(config: Path, log: Path) -> AsyncIterator[Notifier]:
    """Start `notifier run` and wait for its endpoint; it is killed at the end if still up."""
    replica = await Replica(config, log).start()
    try:
        deadline = time.monotonic() + 30
        base = ""
        while not base:
            assert time.monotonic() < deadline, "the endpoint never said where it listens"
            for entry in replica.logged("endpoint.listening"):
                base = str(entry["url"])
            if not base:
                await asyncio.sleep(0.05)
        yield Notifier(replica, base.rstrip("/"))
    finally:
        await replica.ensure_dead()


def log_events(log: Path, event: str) -> list[dict[str, Any]]:
    """The JSON log lines named ``event``."""
    lines = (json.loads(line) for line in log.read_text().splitlines() if line.startswith("{"))
    return [line for line in lines if line.get("event") == event]
