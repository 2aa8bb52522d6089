"""The HTTP endpoint of ``notifier run``: ``/metrics``, ``/healthz``, ``/readyz``.

``/healthz`` answers 200 while the process runs. ``/readyz`` answers 200 only when Redis
answers, every cluster was polled recently (by whichever replica leads it) and no sink is
paused; otherwise 503 with one reason a line. ``/metrics`` is Prometheus text; the Redis-side
gauges (sink lag, dead letters) are read at scrape time.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from notifier.keys import ClusterKeys, sink_group
from notifier.redis_client import REDIS_ERRORS

if TYPE_CHECKING:
    from collections.abc import Mapping

    from notifier.config import Settings
    from notifier.metrics import Metrics
    from notifier.redis_client import AnyRedis
    from notifier.sinks.control import SinkControl

__all__ = ["Endpoint"]

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
    _runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        """The aiohttp application (also used directly by tests)."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
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

    async def problems(self) -> list[str]:
        """Why the service is not ready; empty when it is."""
        reasons: list[str] = []
        try:
            async with asyncio.timeout(REDIS_TIMEOUT):
                await self.redis.ping()
                if self.polling:
                    reasons += await self._stale_clusters()
        except REDIS_ERRORS as exc:
            reasons.append(f"redis: unreachable ({type(exc).__name__})")
        reasons += [
            f"sink {name}: paused: {control.paused}"
            for name, control in self.sinks.items()
            if control.paused is not None
        ]
        return reasons

    async def _stale_clusters(self) -> list[str]:
        reasons = []
        now_ms = time.time() * 1000
        for cluster in self.settings.clusters:
            keys = ClusterKeys(self.settings.redis.key_prefix, cluster.name)
            polled = await self.redis.hget(keys.meta, "polled_at")
            allowed = (
                2 * cluster.poll_interval
                + cluster.poll_budget
                + self.settings.detection.leader_lease
            ) * 1000
            if polled is None:
                reasons.append(f"cluster {cluster.name}: not polled yet")
            elif now_ms - float(polled) > allowed:
                ago = (now_ms - float(polled)) / 1000
                reasons.append(f"cluster {cluster.name}: last complete poll {ago:.0f}s ago")
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
            lags = {_text(g["name"]): g.get("lag") for g in groups}
            for sink in self.settings.sinks:
                lag = lags.get(sink_group(sink.name))
                if lag is not None:
                    self.metrics.sink_lag.labels(sink.name, cluster.name).set(int(lag))
                dead = await self.redis.xlen(keys.dlq(sink.name))
                self.metrics.dead_letters.labels(sink.name, cluster.name).set(int(dead))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
