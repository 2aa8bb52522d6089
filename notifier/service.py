"""``notifier run``: supervised pollers (one per cluster) and sink workers (one per sink,
cluster and partition) until SIGINT/SIGTERM; SIGHUP resumes paused sinks.

Every replica runs them all; the leases decide who works, and the fleet (``notifier.fleet``)
shares the leases out: each replica holds at most its share of each kind (pollers, sink
workers), and hands leases over cleanly when a replica joins.

A task that crashes is logged and restarted with backoff, never silently gone. A stop is said
at once (``service.stopping``); then each poller abandons a poll still fetching (an incomplete
poll changes nothing) or finishes the commit in hand, each worker finishes the deliveries in
hand and acknowledges them; leases are given back, clients closed, and one summary line logged.
Nothing waits on Storm: the grace a stop gives is for commits and deliveries (``stop_grace``).
"""

from __future__ import annotations

import asyncio
import functools
import signal
import time
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Literal

import structlog

from notifier._aio import cancel_firmly, wait_event
from notifier.detect.poller import Poller
from notifier.detect.report import StatusWriter
from notifier.detect.store import StateStore
from notifier.fleet import Fleet
from notifier.keys import ClusterKeys
from notifier.lease import Lease, new_owner_id
from notifier.metrics import Metrics
from notifier.redis_client import REDIS_ERRORS, connect_redis, redis_reason
from notifier.server.endpoint import Endpoint
from notifier.sinks.base import SinkContext
from notifier.sinks.control import SinkControl
from notifier.sinks.layout import Layout
from notifier.sinks.partition import partitions
from notifier.sinks.registry import create_sink
from notifier.sinks.worker import SinkWorker
from notifier.storm import StormClient, create_session

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

    from notifier.config import Settings
    from notifier.fleet import Gate
    from notifier.redis_client import AnyRedis
    from notifier.sinks.base import Sink

__all__ = ["Role", "Service", "run_service", "stop_grace", "supervise"]

log = structlog.get_logger("notifier.service")

Role = Literal["all", "poller", "sinks"]
RESTART_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)
STOP_GRACE = 10.0
"""Seconds a stop waits for a poller's commit in hand (and its checkpoint)."""


def stop_grace(settings: Settings, role: Role) -> float:
    """How long a stop waits for the work in hand before it cuts it short: a poller's commit
    (``STOP_GRACE``), a sink's slowest delivery. Never ``poll_budget``: a fetch is abandoned."""
    grace = STOP_GRACE
    if role in ("all", "sinks"):
        for sink in settings.sinks:
            grace = max(grace, sink.delivery_needs().worst_delivery)
    return grace


async def supervise(
    name: str,
    work: Callable[[], Awaitable[None]],
    stop: asyncio.Event,
    *,
    backoff: Sequence[float] = RESTART_BACKOFF,
) -> None:
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
            delay = backoff[min(failures, len(backoff) - 1)]
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


class Service:
    """The pollers and sink workers of one process, plus its HTTP endpoint.

    ``redis``, ``sinks`` (sink objects by name) and ``metrics`` may be passed in (the demo
    runs on an embedded Redis with sinks of its own); by default they are made from settings.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        role: Role = "all",
        redis: AnyRedis | None = None,
        sinks: Mapping[str, Sink] | None = None,
        metrics: Metrics | None = None,
        endpoint: bool = True,
    ) -> None:
        self.settings = settings
        self.role = role
        self.owner = new_owner_id()
        self.redis = redis
        self._sink_objects = dict(sinks or {})
        self.metrics = metrics or Metrics()
        self.pollers: list[Poller] = []
        self.sinks: dict[str, SinkControl] = {}
        self._with_endpoint = endpoint
        self.endpoint: Endpoint | None = None

    def resume_sinks(self) -> None:
        """SIGHUP: an operator fixed the endpoints of paused sinks."""
        for control in self.sinks.values():
            if control.paused is not None:
                log.warning("service.sink_resumed", sink=control.name, was=control.paused)
                control.resume()

    async def run(self, stop: asyncio.Event) -> int:
        """Run until ``stop`` is set; then say so at once, stop gracefully and log one summary
        line."""
        settings, role = self.settings, self.role
        loop = asyncio.get_running_loop()
        on_hup = _sighup_handled(loop, self.resume_sinks)
        grace = stop_grace(settings, role)
        announce = asyncio.create_task(_say_stopping(stop, role=role, grace=grace))
        pending: set[asyncio.Task[None]] = set()
        try:
            async with AsyncExitStack() as stack:
                if self.redis is None:
                    self.redis = connect_redis(settings.redis)
                    stack.push_async_callback(self.redis.aclose)
                redis = self.redis
                if self._with_endpoint:  # first: /healthz answers even while Redis is away
                    await self._start_endpoint(stack, redis)
                if settings.sinks and not await ensure_groups(redis, settings, stop):
                    return 0
                fleet = Fleet(
                    redis,
                    settings.redis.key_prefix,
                    self.owner,
                    ttl=settings.detection.leader_lease,
                    metrics=self.metrics,
                )
                polling, delivering = role in ("all", "poller"), role in ("all", "sinks")
                poller_gates = self._poller_gates(fleet) if polling else {}
                sink_gates = self._sink_gates(fleet) if delivering else {}
                await fleet.start()  # the first round decides before any lease is tried
                tasks = [asyncio.create_task(fleet.run(stop), name="fleet")]
                if polling:
                    tasks += await self._start_pollers(stack, redis, stop, poller_gates)
                if delivering:
                    tasks += await self._start_sinks(stack, redis, stop, sink_gates)
                log.info(
                    "service.started",
                    role=role,
                    owner=self.owner,
                    clusters=[c.name for c in settings.clusters],
                    sinks=sorted(self.sinks),
                )
                await stop.wait()
                if tasks:
                    _, pending = await asyncio.wait(tasks, timeout=grace)
                await cancel_firmly(list(pending))
        finally:
            announce.cancel()
            if on_hup:
                loop.remove_signal_handler(signal.SIGHUP)
        log.info(
            "service.stopped",
            role=role,
            commits=sum(p.commits for p in self.pollers),
            events=sum(p.events for p in self.pollers),
            delivered=sum(c.delivered for c in self.sinks.values()),
            dead_lettered=sum(c.dead_lettered for c in self.sinks.values()),
            cut_short=len(pending),
        )
        return 0

    async def _start_pollers(
        self, stack: AsyncExitStack, redis: AnyRedis, stop: asyncio.Event, gates: Mapping[str, Gate]
    ) -> list[asyncio.Task[None]]:
        settings, tasks = self.settings, []
        for cluster in settings.clusters:
            session = await stack.enter_async_context(create_session(cluster))
            client = StormClient(cluster, session)
            stack.push_async_callback(client.aclose)
            keys = ClusterKeys(settings.redis.key_prefix, cluster.name)
            poller = Poller(
                cluster,
                settings.detection,
                client=client,
                store=StateStore(
                    redis,
                    keys,
                    maxlen=settings.streams.maxlen,
                    chunk_ops=settings.detection.commit_chunk,
                    lease_ttl=settings.detection.leader_lease,
                ),
                lease=Lease(
                    redis, keys.lease, keys.fence, self.owner, ttl=settings.detection.leader_lease
                ),
                metrics=self.metrics,
                status=StatusWriter(redis, keys, self.owner),
                gate=gates[cluster.name],
            )
            self.pollers.append(poller)
            tasks.append(
                asyncio.create_task(
                    supervise(f"poller:{cluster.name}", functools.partial(poller.run, stop), stop)
                )
            )
        return tasks

    async def _start_sinks(
        self, stack: AsyncExitStack, redis: AnyRedis, stop: asyncio.Event, gates: Mapping[str, Gate]
    ) -> list[asyncio.Task[None]]:
        settings, tasks = self.settings, []
        prefix = settings.redis.key_prefix
        context = SinkContext(redis, prefix)
        for sink_settings in settings.sinks:
            sink = self._sink_objects.get(sink_settings.name) or create_sink(sink_settings, context)
            stack.push_async_callback(sink.aclose)
            control = self.sinks[sink_settings.name] = SinkControl(sink_settings.name)
            needs = sink_settings.delivery_needs()
            for cluster in settings.clusters:
                for part in partitions(sink_settings.name, sink_settings.partitions):
                    worker = SinkWorker(
                        sink,
                        sink_settings,
                        control,
                        cluster=cluster.name,
                        redis=redis,
                        keys=ClusterKeys(prefix, cluster.name),
                        owner=self.owner,
                        maxlen=settings.streams.maxlen,
                        concurrency=needs.concurrency,
                        claim_idle=needs.worst_delivery,
                        lease_ttl=settings.detection.leader_lease,
                        metrics=self.metrics,
                        partition=part,
                        gate=gates[_lane_lease(cluster.name, part.leased_name)],
                    )
                    tasks.append(
                        asyncio.create_task(
                            supervise(
                                f"sink:{part.lane}:{cluster.name}",
                                functools.partial(worker.run, stop),
                                stop,
                            )
                        )
                    )
        return tasks

    def _poller_gates(self, fleet: Fleet) -> dict[str, Gate]:
        """The fleet's gates of the cluster leases this service polls under."""
        prefix = self.settings.redis.key_prefix
        return fleet.register(
            "pollers", {c.name: ClusterKeys(prefix, c.name).lease for c in self.settings.clusters}
        )

    def _sink_gates(self, fleet: Fleet) -> dict[str, Gate]:
        """The fleet's gates of every (cluster, sink partition) lease this service runs."""
        leases = {}
        for cluster in self.settings.clusters:
            keys = ClusterKeys(self.settings.redis.key_prefix, cluster.name)
            for sink in self.settings.sinks:
                for part in partitions(sink.name, sink.partitions):
                    leases[_lane_lease(cluster.name, part.leased_name)] = part.lease_key(keys)
        return fleet.register("sinks", leases)

    async def _start_endpoint(self, stack: AsyncExitStack, redis: AnyRedis) -> None:
        endpoint = Endpoint(
            self.settings,
            redis,
            self.metrics,
            self.sinks,
            polling=self.role in ("all", "poller"),
            pollers=self.pollers,
        )
        try:
            await endpoint.start()
        except OSError as exc:  # a replica on the same host: keep working, say so loudly
            log.error(  # noqa: TRY400 - a traceback adds nothing to "address in use"
                "endpoint.listen_failed",
                listen=self.settings.server.listen,
                error=exc.strerror or type(exc).__name__,
                effect="no /metrics, /healthz or /readyz from this process",
            )
            return
        self.endpoint = endpoint
        stack.push_async_callback(endpoint.aclose)


async def _say_stopping(stop: asyncio.Event, *, role: Role, grace: float) -> None:
    """``service.stopping`` the moment ``stop`` is set, whatever the service is doing then
    (waiting for Redis at start-up, polling, delivering)."""
    await stop.wait()
    log.info("service.stopping", role=role, grace=grace)


def _sighup_handled(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> bool:
    """Route SIGHUP to ``callback`` where the platform has it (and we run the main thread)."""
    if not hasattr(signal, "SIGHUP"):
        return False
    try:
        loop.add_signal_handler(signal.SIGHUP, callback)
    except (RuntimeError, ValueError):  # not the main thread of the main interpreter
        return False
    return True


def _lane_lease(cluster: str, lane: str) -> str:
    """The fleet's name of a sink partition's lease on one cluster."""
    return f"{cluster}/{lane}"


async def ensure_groups(redis: AnyRedis, settings: Settings, stop: asyncio.Event) -> bool:
    """Create every sink's consumer groups on every cluster stream before anything is emitted
    (``sinks.layout``: a change of ``partitions`` waits for the old layout's workers)."""
    failing = False
    while not stop.is_set():
        try:
            for cluster in settings.clusters:
                keys = ClusterKeys(settings.redis.key_prefix, cluster.name)
                for sink in settings.sinks:
                    await Layout(redis, keys, sink.name, sink.partitions).ensure()
        except REDIS_ERRORS as exc:
            if not failing:
                log.warning("service.redis_unavailable", error=redis_reason(exc))
                failing = True
            await wait_event(stop, 2.0)
        else:
            return True
    return False


async def run_service(settings: Settings, stop: asyncio.Event, *, role: Role = "all") -> int:
    """Run pollers and/or sink workers for every configured cluster until ``stop`` is set."""
    return await Service(settings, role=role).run(stop)
