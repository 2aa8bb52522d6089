"""A poller over a misbehaving Storm server, and what it said: the harness of the bad-input tests.

A bad answer must end as an incomplete poll that says why three ways: the ``storm.poll_incomplete``
line (``reason``, ``error``), ``poller.storm_unavailable`` once, and
``notifier_poll_incomplete_total{reason}``; and nothing may reach Redis. ``PollerRun`` runs real
poll cycles (a real ``StormClient`` on a real port, a real redis-server) and keeps all three for
the test to check; ``bad_run`` serves a viewer list from a handler and runs cycles that must
all end incomplete, and ``page`` is one answer of the documented shape. ``MEMORY_PROBE`` is the
child process that measures how much memory one poll
of a huge body costs (a process of its own, so that no earlier test's peak hides the growth).
"""

from __future__ import annotations

import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog.testing
from aiohttp import web

from notifier.config import ClusterSettings, DetectionSettings
from notifier.detect.poller import Poller
from notifier.detect.store import StateStore
from notifier.keys import ClusterKeys
from notifier.lease import Lease
from notifier.metrics import Metrics
from notifier.storm import Backoff, StormClient, create_session
from testkit.detection_support import stream_events

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping

    from redis.asyncio import Redis

    Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

__all__ = ["KEYS", "MEMORY_PROBE", "PLAIN", "PollerRun", "bad_run", "page", "poller_run"]

KEYS = ClusterKeys("t", "sim")
PLAIN = DetectionSettings.model_validate(
    {
        "streams": {"enabled": False},
        "confirm_with_lookup": False,
        "disconnect_after_missed_polls": 1,
    }
)
"""Viewer events only, no lookups, a viewer absent from one complete poll is disconnected."""


@dataclass
class PollerRun:
    """A poller of one cluster, the log lines of its cycles, its metrics and its Redis."""

    poller: Poller
    metrics: Metrics
    redis: Redis
    logs: list[MutableMapping[str, Any]] = field(default_factory=list)

    async def cycle(self) -> None:
        """One scheduled slot: lead, poll, commit (or not)."""
        await self.poller.cycle()

    def incomplete(self, reason: str) -> float:
        """``notifier_poll_incomplete_total{cluster="sim", reason=...}``."""
        labels = {"cluster": "sim", "reason": reason}
        value = self.metrics.registry.get_sample_value("notifier_poll_incomplete_total", labels)
        return value or 0.0

    def polls(self, outcome: str) -> float:
        """``notifier_polls_total{cluster="sim", outcome=...}``."""
        labels = {"cluster": "sim", "outcome": outcome}
        return self.metrics.registry.get_sample_value("notifier_polls_total", labels) or 0.0

    def lines(self, event: str) -> list[MutableMapping[str, Any]]:
        """The captured log lines of one event name."""
        return [line for line in self.logs if line["event"] == event]

    async def events(self) -> list[dict[str, Any]]:
        """The cluster's event stream, oldest first."""
        return await stream_events(self.redis, KEYS.events)

    async def committed(self) -> int:
        """Polls committed to Redis so far."""
        return int(await self.redis.hget(KEYS.meta, "polls") or 0)

    def assert_incomplete(self, reason: str, *, polls: int = 1) -> str:
        """``polls`` cycles ended incomplete for ``reason``, said in the log and the metrics;
        returns the error of the last one."""
        lines = self.lines("storm.poll_incomplete")
        assert [line["reason"] for line in lines] == [reason] * polls, lines
        assert self.incomplete(reason) == polls
        assert self.polls("incomplete") == polls
        assert self.polls("committed") == 0
        (warned,) = self.lines("poller.storm_unavailable")
        assert warned["reason"] == reason
        error: str = lines[-1]["error"]
        assert error
        return error


@asynccontextmanager
async def poller_run(
    url: str,
    redis: Redis,
    detection: DetectionSettings = PLAIN,
    *,
    settings: ClusterSettings,
) -> AsyncIterator[PollerRun]:
    """A ``PollerRun`` against ``url`` (``settings`` name the cluster ``sim``); logs captured."""
    backoff = Backoff(base=0.01, cap=0.05)
    with structlog.testing.capture_logs() as logs:
        async with create_session(settings) as session:
            client = StormClient(settings, session, backoff=backoff)
            store = StateStore(redis, KEYS, maxlen=100_000)
            lease = Lease(redis, KEYS.lease, KEYS.fence, f"test-{uuid.uuid4().hex[:6]}", ttl=30)
            metrics = Metrics()
            poller = Poller(
                settings, detection, client=client, store=store, lease=lease, metrics=metrics
            )
            try:
                yield PollerRun(poller, metrics, redis, logs)
            finally:
                await client.aclose()


def page(rows: list[Any], **data: Any) -> web.Response:
    """An answer of the documented shape: ``rows`` in ``$.data.list``, ``data`` beside it."""
    return web.json_response({"data": {**data, "list": rows}})


@asynccontextmanager
async def viewer_list(viewers: Handler) -> AsyncIterator[str]:
    """A bare server on 127.0.0.1 answering ``GET /api/cluster/viewers`` with ``viewers``."""
    app = web.Application()
    app.router.add_get("/api/cluster/viewers", viewers)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def bad_run(viewers: Handler, redis: Redis, cycles: int = 1, **cluster: Any) -> PollerRun:
    """``cycles`` poll cycles against a server answering the viewer list with ``viewers``
    (``cluster``: settings over a token, a 2 s budget and a 1 s timeout); none may write."""
    async with viewer_list(viewers) as url:
        data = {"name": "sim", "base_url": url, "auth": {"token": "t"}}
        settings = ClusterSettings.model_validate(
            {**data, "poll_budget": "2s", "timeout": "1s", **cluster}
        )
        async with poller_run(url, redis, settings=settings) as run:
            for _ in range(cycles):
                await run.cycle()
    assert await run.events() == []
    assert await run.committed() == 0
    return run


MEMORY_PROBE = r'''
"""One poll of a 200 MB chunked body from a server in this process; prints the memory growth
and how many times the body was served."""
import asyncio, json, sys
from aiohttp import web
from notifier.config import ClusterSettings
from notifier.storm import StormClient, create_session

TOTAL = 200 * 1024 * 1024
CHUNK = b" " * (1024 * 1024)
sent = [0]
served = [0]


def peak_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM")


async def viewers(request: web.Request) -> web.StreamResponse:
    if request.query.get("search") == "warm":
        return web.json_response({"data": {"list": [{"id": "v_1"}]}})
    served[0] += 1
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    await response.write(b'{"data": {"list": [')
    try:
        while sent[0] < TOTAL:
            await response.write(CHUNK)
            sent[0] += len(CHUNK)
        await response.write(b"]}}")
    except (ConnectionError, RuntimeError):
        pass
    return response


async def main() -> None:
    app = web.Application()
    app.router.add_get("/api/cluster/viewers", viewers)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    data = {"name": "sim", "base_url": url, "auth": {"token": "t"}, "poll_budget": "60s",
            "timeout": "60s", "filters": {"search": "x"}}
    if sys.argv[1] != "default":
        data["max_page_bytes"] = int(sys.argv[1])
    settings = ClusterSettings.model_validate(data)
    async with create_session(settings) as session:
        warm = ClusterSettings.model_validate({**data, "filters": {"search": "warm"}})
        await StormClient(warm, session).count()  # imports and pools in place before the baseline
        before = peak_kib()
        poll = await StormClient(settings, session).poll()
        after = peak_kib()
    await runner.cleanup()
    print(json.dumps({"growth_mib": (after - before) / 1024, "complete": poll.complete,
                      "reason": poll.reason, "error": poll.error, "sent_mib": sent[0] / 2**20,
                      "served": served[0], "limit": settings.max_page_bytes}))


asyncio.run(main())
'''
