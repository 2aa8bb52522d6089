"""What an operator sees of one sink lane while a delivery test runs, and what the process costs.

``LaneWatch`` serves a real ``Endpoint`` (the one ``notifier run`` serves) on 127.0.0.1 and
reads it over HTTP as Prometheus and a person would: ``/metrics`` (``notifier_sink_waiting``
and friends), ``/api/status`` (the status model) and ``/readyz``. ``Memory`` samples the
process's resident set while a test runs, to show that a fault does not make it grow.
``until`` polls a condition with a deadline (the tests never sleep to synchronise), and
``steady`` waits for a lane the metric and the status agree on, still.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
import msgspec
from aiohttp.test_utils import TestServer

from notifier.config import Settings
from notifier.server.endpoint import Endpoint
from notifier.status import SinkLane, Status
from notifier.status.waiting import STATES

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

    from redis.asyncio import Redis

    from notifier.metrics import Metrics
    from notifier.sinks.control import SinkControl

__all__ = ["LaneWatch", "Memory", "Seen", "lane_watch", "settings_for", "steady", "until"]

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def settings_for(redis_url: str, sink: Mapping[str, Any], cluster: str = "eu-1") -> Settings:
    """A configuration of one cluster (never polled here) and one sink, for the endpoint."""
    return Settings.model_validate(
        {
            "redis": {"url": redis_url},
            "clusters": [
                {"name": cluster, "base_url": "http://127.0.0.1:9", "auth": {"token": "t"}}
            ],
            "sinks": [dict(sink)],
        }
    )


@dataclass(frozen=True, slots=True)
class Seen:
    """One look at a lane: the metric's series by state and the status model's lane."""

    waiting: dict[str, float | None]
    """``notifier_sink_waiting`` by state (None: the series is absent)."""
    paused_metric: float
    lane: SinkLane
    sink_paused: str | None
    """The status's ``sinks[0].paused``."""

    def agrees(self) -> str | None:
        """None when the metric and the status count the same; else what differs."""
        lane = self.lane
        expected = {
            "unread": None if lane.lag is None else float(lane.lag),
            "in_hand": float(lane.in_hand),
            "retrying": float(lane.retrying),
        }
        if self.waiting != expected:
            return f"metric {self.waiting} != status {expected}"
        if lane.in_hand + lane.retrying != lane.pending:
            return f"status: in_hand {lane.in_hand} + retrying {lane.retrying} != {lane.pending}"
        return None


class LaneWatch:
    """Reads one sink lane (``sink`` of ``cluster``) through a served ``Endpoint``."""

    def __init__(self, base: str, session: aiohttp.ClientSession, sink: str, cluster: str) -> None:
        self._base = base
        self._session = session
        self._sink = sink
        self._cluster = cluster

    async def look(self) -> Seen:
        """``/metrics``, then ``/api/status``: call it while the lane is still to compare them
        exactly (``Seen.agrees``)."""
        metrics = await self._get("/metrics")
        status = msgspec.json.decode(await self._get("/api/status"), type=Status)
        (sink,) = [s for s in status.sinks if s.name == self._sink]
        (lane,) = [lane for lane in sink.lanes if lane.cluster == self._cluster]
        labels = {"sink": self._sink, "cluster": self._cluster}
        waiting = {s: _sample(metrics, "notifier_sink_waiting", **labels, state=s) for s in STATES}
        paused = _sample(metrics, "notifier_sink_paused", sink=self._sink) or 0.0
        return Seen(waiting, paused, lane, sink.paused)

    async def readyz(self) -> tuple[int, str]:
        """``/readyz``: status and body."""
        async with self._session.get(self._base + "/readyz") as response:
            return response.status, await response.text()

    async def _get(self, path: str) -> str:
        async with self._session.get(self._base + path) as response:
            assert response.status == 200, f"{path}: {response.status}"
            return await response.text()


@asynccontextmanager
async def lane_watch(
    settings: Settings,
    redis: Redis,
    metrics: Metrics,
    controls: Mapping[str, SinkControl],
    *,
    cluster: str = "eu-1",
) -> AsyncIterator[LaneWatch]:
    """The endpoint of a ``--role sinks`` process whose workers share ``metrics`` and
    ``controls``, served on a free port; watches the configuration's first sink."""
    endpoint = Endpoint(settings, redis, metrics, controls, polling=False)
    server = TestServer(endpoint.app(), host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            base = str(server.make_url("")).rstrip("/")
            yield LaneWatch(base, session, settings.sinks[0].name, cluster)
    finally:
        await server.close()


class Memory:
    """Samples the resident set of this process every few milliseconds while it runs."""

    def __init__(self, every: float = 0.005) -> None:
        self.every = every
        self.baseline = _rss()
        self.peak = self.baseline
        self._task: asyncio.Task[None] | None = None

    @property
    def growth(self) -> int:
        """Bytes the peak sample is above the baseline (the resident set at construction)."""
        return self.peak - self.baseline

    async def __aenter__(self) -> Memory:
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.peak = max(self.peak, _rss())

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, _rss())
            await asyncio.sleep(self.every)  # the sampling pace


async def until(
    check: Callable[[], Awaitable[bool] | bool], what: str, *, timeout: float = 20.0
) -> float:
    """Seconds until ``check()`` holds (asked every 10 ms); AssertionError naming ``what``."""
    started = time.monotonic()
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return time.monotonic() - started
        assert time.monotonic() - started < timeout, f"not within {timeout}s: {what}"
        await asyncio.sleep(0.01)  # the pace of the checks, not a synchronisation


async def steady(watch: LaneWatch, want: Callable[[Seen], bool], what: str) -> Seen:
    """The lane once the metric and the status agree, twice in a row, on a look that ``want``
    accepts (the lane is still: a fault holds it)."""
    last: list[Seen] = []

    async def check() -> bool:
        seen = await watch.look()
        still = bool(last) and last[-1] == seen
        last.append(seen)
        return still and seen.agrees() is None and want(seen)

    await until(check, what)
    return last[-1]


def _rss() -> int:
    """Resident bytes of this process (Linux: /proc/self/statm)."""
    with open("/proc/self/statm", encoding="ascii") as statm:  # noqa: PTH123 - hot, tiny
        return int(statm.read().split()[1]) * PAGE_SIZE


def _sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the one sample of ``name`` with exactly these labels; None if absent."""
    for match in re.finditer(rf"^{re.escape(name)}\{{([^}}]*)\}} (\S+)$", text, re.MULTILINE):
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
        if found == labels:
            return float(match.group(2))
    return None
