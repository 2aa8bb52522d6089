"""``notifier run``: supervised pollers (one per cluster) and sink workers (one per sink and
cluster) until SIGINT/SIGTERM; SIGHUP resumes paused sinks.

A task that crashes is logged and restarted with backoff, never silently gone. On stop, each
poller finishes the poll in hand and commits it, each worker finishes the deliveries in hand
and acknowledges them; leases are given back, clients closed, and one summary line logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import structlog

from notifier._aio import wait_event
from notifier.detect.lease import Lease, new_owner_id
from notifier.detect.poller import REDIS_ERRORS, Poller
from notifier.detect.store import StateStore
from notifier.keys import ClusterKeys
from notifier.redis_client import connect_redis
from notifier.sinks.registry import create_sink
from notifier.sinks.stream import SinkStream
from notifier.sinks.worker import SinkControl, SinkWorker
from notifier.storm import StormClient, create_session

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from notifier.config import Settings
    from notifier.redis_client import AnyRedis
    from notifier.sinks.settings import SinkBaseSettings

__all__ = ["Role", "Service", "run_service", "supervise"]

log = structlog.get_logger("notifier.service")

Role = Literal["all", "poller", "sinks"]
RESTART_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)
STOP_GRACE = 10.0


async def supervise(name: str, work: Callable[[], Awaitable[None]], stop: asyncio.Event) -> None:
    """Run ``work`` until ``stop``; if it crashes, log it and start it again after a backoff."""
    failures = 0
    while not stop.is_set():
        started = time.monotonic()
        try:
            await work()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if time.monotonic() - started > 60:
                failures = 0
            delay = RESTART_BACKOFF[min(failures, len(RESTART_BACKOFF) - 1)]
            failures += 1
            log.exception(
                "service.task_crashed",
                task=name,
                error=f"{type(exc).__name__}: {exc}",
                restart_in=delay,
            )
            await wait_event(stop, delay)
        else:
            return


def _sink_timing(settings: SinkBaseSettings) -> tuple[int, float]:
    """Deliveries in flight, and how long one can take at worst (claims wait longer)."""
    extra: dict[str, Any] = dict(settings)
    concurrency = int(extra.get("concurrency", 1 if settings.type in ("slack", "stdout") else 8))
    worst = (
        float(extra.get("timeout", 10.0))
        + float(extra.get("batch_wait", extra.get("group_wait", 0.0)))
        + 5.0
    )
    return concurrency, worst


@dataclass
class Service:
    """The running pieces, for the HTTP endpoint and the summary."""

    pollers: list[Poller] = field(default_factory=list)
    sinks: dict[str, SinkControl] = field(default_factory=dict)

    def resume_sinks(self) -> None:
        """SIGHUP: an operator fixed the endpoints of paused sinks."""
        for control in self.sinks.values():
            if control.paused is not None:
                log.warning("service.sink_resumed", sink=control.name, was=control.paused)
                control.resume()


async def ensure_groups(redis: AnyRedis, settings: Settings, stop: asyncio.Event) -> bool:
    """Create every sink's consumer group on every cluster stream before anything is emitted."""
    failing = False
    while not stop.is_set():
        try:
            for cluster in settings.clusters:
                keys = ClusterKeys(settings.redis.key_prefix, cluster.name)
                for sink in settings.sinks:
                    await SinkStream(
                        redis, keys, sink.name, maxlen=settings.streams.maxlen
                    ).ensure_group()
        except REDIS_ERRORS as exc:
            if not failing:
                log.warning("service.redis_unavailable", error=" ".join(str(exc).split())[:200])
                failing = True
            await wait_event(stop, 2.0)
        else:
            return True
    return False


async def run_service(settings: Settings, stop: asyncio.Event, *, role: Role = "all") -> int:
    """Run pollers and/or sink workers for every configured cluster until ``stop`` is set."""
    owner = new_owner_id()
    redis = connect_redis(settings.redis)
    service = Service()
    tasks: list[asyncio.Task[None]] = []
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGHUP, service.resume_sinks)
    async with AsyncExitStack() as stack:
        stack.push_async_callback(redis.aclose)
        if settings.sinks and not await ensure_groups(redis, settings, stop):
            return 0
        if role in ("all", "poller"):
            for cluster in settings.clusters:
                session = await stack.enter_async_context(create_session(cluster))
                client = StormClient(cluster, session)
                stack.push_async_callback(client.aclose)
                keys = ClusterKeys(settings.redis.key_prefix, cluster.name)
                poller = Poller(
                    cluster,
                    settings.detection,
                    client=client,
                    store=StateStore(redis, keys, maxlen=settings.streams.maxlen),
                    lease=Lease(
                        redis, keys.lease, keys.fence, owner, ttl=settings.detection.leader_lease
                    ),
                )
                service.pollers.append(poller)
                tasks.append(
                    asyncio.create_task(
                        supervise(
                            f"poller:{cluster.name}", functools.partial(poller.run, stop), stop
                        )
                    )
                )
        if role in ("all", "sinks"):
            for sink_settings in settings.sinks:
                sink = create_sink(sink_settings)
                stack.push_async_callback(sink.aclose)
                control = service.sinks[sink_settings.name] = SinkControl(sink_settings.name)
                concurrency, worst = _sink_timing(sink_settings)
                for cluster in settings.clusters:
                    worker = SinkWorker(
                        sink,
                        sink_settings,
                        control,
                        cluster=cluster.name,
                        redis=redis,
                        keys=ClusterKeys(settings.redis.key_prefix, cluster.name),
                        owner=owner,
                        maxlen=settings.streams.maxlen,
                        concurrency=concurrency,
                        claim_idle=worst,
                        lease_ttl=settings.detection.leader_lease,
                    )
                    tasks.append(
                        asyncio.create_task(
                            supervise(
                                f"sink:{sink_settings.name}:{cluster.name}",
                                functools.partial(worker.run, stop),
                                stop,
                            )
                        )
                    )
        log.info(
            "service.started",
            role=role,
            owner=owner,
            clusters=[c.name for c in settings.clusters],
            sinks=[s.name for s in settings.sinks] if role != "poller" else [],
        )
        await stop.wait()
        grace = max(c.poll_budget for c in settings.clusters) + STOP_GRACE
        _, pending = await asyncio.wait(tasks, timeout=grace) if tasks else (set(), set())
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.remove_signal_handler(signal.SIGHUP)
    log.info(
        "service.stopped",
        role=role,
        commits=sum(p.commits for p in service.pollers),
        events=sum(p.events for p in service.pollers),
        delivered=sum(c.delivered for c in service.sinks.values()),
        dead_lettered=sum(c.dead_lettered for c in service.sinks.values()),
        cut_short=len(pending),
    )
    return 0
