"""The HTTP endpoint of ``notifier run``: ``/metrics``, ``/healthz``, ``/readyz``, ``/api/status``.

``/healthz`` answers 200 while the process runs. ``/readyz`` answers 200 only when Redis
answers, every cluster was polled recently (by whichever replica leads it; not asked of a
``--role sinks`` process) and no sink is paused; otherwise 503 with one reason a line, worded
as the status model words its problems (``notifier.status``), the cause included. ``/metrics``
is Prometheus text; the Redis-side gauges (sink lag, what waits for each sink by state, dead
letters) are read at scrape time, what waits as the status model counts it (``status.waiting``).
``/api/status`` is the status model as JSON (``docs/status.md``), 503 with
``{"error": "redis: unreachable (...)"}`` when Redis does not answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from notifier.keys import ClusterKeys
from notifier.redis_client import REDIS_ERRORS
from notifier.server.auth import bearer_auth
from notifier.server.console import ConsolePage, serve_asset
from notifier.sinks.partition import partitions
from notifier.status import StatusUnavailable, problem_lines, read_status, sink_problem
from notifier.status.waiting import Waiting

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from notifier.config import Settings
    from notifier.metrics import Metrics
    from notifier.redis_client import AnyRedis
    from notifier.sinks.control import SinkControl
    from notifier.status import Status

__all__ = ["Backlogged", "Endpoint"]


class Backlogged(Protocol):
    """A poller of this process, as readiness sees it."""

    @property
    def cluster(self) -> str: ...

    @property
    def backlog(self) -> tuple[int, int]:
        """(polls, events) detected and not written to Redis yet."""
        ...


log = structlog.get_logger("notifier.endpoint")
REDIS_TIMEOUT = 2.0


@dataclass
class Endpoint:
    """Serves the three paths on ``server.listen``."""

    settings: Settings
    redis: AnyRedis
    metrics: Metrics
    sinks: Mapping[str, SinkControl]
    polling: bool
    pollers: Sequence[Backlogged] = ()
    _runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        """The aiohttp application (also used directly by tests)."""
        token = self.settings.server.auth_token
        app = web.Application(middlewares=[bearer_auth(token)] if token is not None else [])
        console = ConsolePage(self.status)
        app.router.add_get("/", console.handle)
        app.router.add_get("/assets/{name}", serve_asset)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/api/status", self._api_status)
        return app

    async def start(self) -> str:
        """Listen on ``server.listen``; returns the address actually bound."""
        host, _, port = self.settings.server.listen.rpartition(":")
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host.strip("[]"), int(port))
        await site.start()
        bound = self._runner.addresses[0]
        address = f"http://{host}:{bound[1]}"
        log.info("endpoint.listening", url=address)
        return address

    async def aclose(self) -> None:
        """Stop listening; idempotent."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _request: web.Request) -> web.Response:
        reasons = await self.problems()
        if reasons:
            return web.Response(status=503, text="not ready\n" + "".join(f"{r}\n" for r in reasons))
        return web.Response(text="ready\n")

    async def status(self) -> Status:
        """The status model, read from Redis (``StatusUnavailable`` when it does not answer)."""
        return await read_status(self.redis, self.settings)

    async def _api_status(self, _request: web.Request) -> web.Response:
        try:
            status = await self.status()
        except StatusUnavailable as exc:
            body = msgspec.json.encode({"error": str(exc)})
            return web.Response(status=503, body=body, headers=_JSON_HEADERS)
        return web.Response(body=msgspec.json.encode(status), headers=_JSON_HEADERS)

    async def problems(self) -> list[str]:
        """Why the service is not ready, one line each (the status model's); empty when it is.

        A sink paused in this process counts even while Redis cannot say so, and so do polls
        this process detected and Redis has not taken (an outage, or Redis refusing writes).
        """
        try:
            health = await read_status(self.redis, self.settings, detail=False)
        except StatusUnavailable as exc:
            reasons = [str(exc)]
        else:
            reasons = problem_lines(health.clusters if self.polling else (), health.sinks)
        reasons += [
            line
            for name, control in self.sinks.items()
            if control.paused is not None
            and (line := sink_problem(name, control.paused)) not in reasons
        ]
        for poller in self.pollers:
            polls, events = poller.backlog
            if polls:
                reasons.append(
                    f"cluster {poller.cluster}: {polls} polls ({events} events) detected and"
                    " not written yet: Redis does not take them"
                )
        return reasons

    async def _metrics(self, _request: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(REDIS_TIMEOUT):
                await self._refresh_gauges()
        except REDIS_ERRORS as exc:
            log.debug("endpoint.gauges_unavailable", error=type(exc).__name__)
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _refresh_gauges(self) -> None:
        for name, control in self.sinks.items():
            self.metrics.sink_paused.labels(name).set(1 if control.paused else 0)
        for cluster in self.settings.clusters:
            keys = ClusterKeys(self.settings.redis.key_prefix, cluster.name)
            groups: list[dict[str, Any]] = []
            if self.settings.sinks and await self.redis.exists(keys.events):
                groups = await self.redis.xinfo_groups(keys.events)
            by_name = {_text(g["name"]): g for g in groups}
            for sink in self.settings.sinks:
                lags: list[int] = []
                each_lag: list[int | None] = []
                pending: list[int] = []
                for part in partitions(sink.name, sink.partitions):
                    group = by_name.get(part.group)
                    if group is None:
                        each_lag.append(None)
                        continue
                    labels = (sink.name, cluster.name, part.label)
                    lag = group.get("lag")
                    each_lag.append(None if lag is None else int(lag))
                    if lag is not None:
                        self.metrics.partition_lag.labels(*labels).set(int(lag))
                        lags.append(int(lag))
                    pending.append(int(group["pending"]))
                    self.metrics.partition_pending.labels(*labels).set(pending[-1])
                if lags:  # every partition reads the whole stream: the furthest behind
                    self.metrics.sink_lag.labels(sink.name, cluster.name).set(max(lags))
                retrying = int(await self.redis.hlen(keys.retries(sink.name)))
                self._set_waiting(sink.name, cluster.name, Waiting.of(each_lag, pending, retrying))
                dead = await self.redis.xlen(keys.dlq(sink.name))
                self.metrics.dead_letters.labels(sink.name, cluster.name).set(int(dead))

    def _set_waiting(self, sink: str, cluster: str, waiting: Waiting) -> None:
        """``notifier_sink_waiting`` of one lane, as the status model counts it; the ``unread``
        series is left out while Redis cannot count it (as the status's ``lag`` is null)."""
        gauge = self.metrics.sink_waiting
        for state, count in waiting.by_state().items():
            if count is not None:
                gauge.labels(sink, cluster, state).set(count)
            else:
                with contextlib.suppress(KeyError):
                    gauge.remove(sink, cluster, state)


_JSON_HEADERS = {"Content-Type": "application/json", "Cache-Control": "no-store"}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
