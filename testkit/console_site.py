"""A console to look at: the simulator, the real service over a real Redis, its endpoint.

Used by the browser test (``tests/test_console_browser.py``) and the README's screenshots
(``docs/screenshots.py``)::

    async with running_console(redis, redis_url, SimulatorSettings(...), token="t") as site:
        status = await site.status(http)      # GET /api/status, as JSON
        ...                                   # open site.url in a browser

The service is ``notifier.service.Service`` in this process (pollers, sink workers, the HTTP
endpoint on a free 127.0.0.1 port), stopped gracefully when the block exits. Sinks are given
as config dicts; stdout sinks write into a buffer, never onto the test's output.
"""

from __future__ import annotations

import asyncio
import io
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp

from notifier.config import Settings
from notifier.service import Service
from notifier.simulator import running_simulator
from notifier.sinks.stdout import StdoutSink, StdoutSinkSettings
from testkit.redis_procs import free_port

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

    from notifier.redis_client import AnyRedis
    from notifier.simulator import RunningSimulator, SimulatorSettings
    from notifier.sinks.base import Sink

__all__ = ["SIM_TOKEN", "ConsoleSite", "eventually", "running_console"]

SIM_TOKEN = "sim-token"
"""The simulator's stand-in static credential."""
START_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class ConsoleSite:
    """A running console: where it answers and what runs behind it."""

    url: str
    """``http://127.0.0.1:PORT`` of the endpoint (no trailing slash)."""
    token: str | None
    sim: RunningSimulator
    service: Service

    @property
    def headers(self) -> dict[str, str]:
        """The ``Authorization`` header the endpoint asks for (none without a token)."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def status(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        """``GET /api/status`` as JSON; an error unless it answers 200."""
        async with http.get(f"{self.url}/api/status", headers=self.headers) as response:
            response.raise_for_status()
            body: dict[str, Any] = await response.json()
            return body


async def eventually(
    check: Callable[[], Awaitable[bool]], *, timeout: float, what: str, every: float = 0.05
) -> None:
    """Ask ``check`` until it says yes; ``AssertionError`` naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g}s: {what}")
        await asyncio.sleep(every)  # polling an outside process, not synchronising with it


@asynccontextmanager
async def running_console(
    redis: AnyRedis,
    redis_url: str,
    simulator: SimulatorSettings,
    *,
    token: str | None,
    sinks: Sequence[dict[str, Any]] = ({"name": "out", "type": "stdout"},),
    cluster: str = "sim",
    poll_interval: str = "200ms",
) -> AsyncIterator[ConsoleSite]:
    """Serve the simulator, run the service over it, and yield once ``/healthz`` answers."""
    async with running_simulator(simulator) as sim:
        port = free_port()
        server: dict[str, Any] = {"listen": f"127.0.0.1:{port}"}
        if token is not None:
            server["auth_token"] = token
        settings = Settings.model_validate(
            {
                "redis": {"url": redis_url},
                "clusters": [
                    {
                        "name": cluster,
                        "base_url": sim.url,
                        "auth": {"token": SIM_TOKEN},
                        "poll_interval": poll_interval,
                        "poll_budget": "5s",
                    }
                ],
                "detection": {"leader_lease": "2s", "health": {"consecutive_polls": 1}},
                "sinks": list(sinks),
                "server": server,
                "logging": {"format": "json", "level": "warning"},
            }
        )
        quiet: dict[str, Sink] = {
            s["name"]: StdoutSink(StdoutSinkSettings(name=s["name"]), out=io.BytesIO())
            for s in sinks
            if s["type"] == "stdout"
        }
        service = Service(settings, redis=redis, sinks=quiet)
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        site = ConsoleSite(f"http://127.0.0.1:{port}", token, sim, service)
        try:
            async with aiohttp.ClientSession() as http:

                async def healthy() -> bool:
                    if task.done():
                        task.result()  # raises what stopped it
                        raise AssertionError("the service stopped before its endpoint answered")
                    try:
                        async with http.get(f"{site.url}/healthz") as response:
                            return response.status == 200
                    except aiohttp.ClientConnectionError:
                        return False

                await eventually(healthy, timeout=START_TIMEOUT, what="the endpoint answers")
            yield site
        finally:
            stop.set()
            await asyncio.wait_for(task, START_TIMEOUT)
