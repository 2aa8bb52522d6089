"""``notifier run``: one supervised poller per cluster until SIGINT/SIGTERM.

A task that crashes is logged and restarted with backoff, never silently gone. On stop, each
poller finishes the poll in hand, commits it and gives its lease back; then clients close and
one summary line is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import structlog

from notifier.detect.lease import Lease, new_owner_id
from notifier.detect.poller import Poller
from notifier.detect.store import StateStore
from notifier.keys import ClusterKeys
from notifier.redis_client import connect_redis
from notifier.storm import StormClient, create_session

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from notifier.config import Settings

__all__ = ["run_service", "supervise"]

log = structlog.get_logger("notifier.service")

RESTART_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)


async def supervise(name: str, work: Callable[[], Awaitable[None]], stop: asyncio.Event) -> None:
    """Run ``work`` until ``stop``; if it crashes, log it and start it again after a backoff."""
    failures = 0
    while not stop.is_set():
        started = time.monotonic()
        try:
            await work()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a crashed task is restarted, never lost
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
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
        else:
            return


async def run_service(settings: Settings, stop: asyncio.Event, *, role: str = "poller") -> int:
    """Run the pollers of every configured cluster until ``stop`` is set."""
    owner = new_owner_id()
    redis = connect_redis(settings.redis)
    pollers: list[Poller] = []
    async with AsyncExitStack() as stack:
        stack.push_async_callback(redis.aclose)
        tasks = []
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
                lease=Lease(redis, keys, owner, ttl=settings.detection.leader_lease),
            )
            pollers.append(poller)
            tasks.append(
                asyncio.create_task(
                    supervise(f"poller:{cluster.name}", functools.partial(poller.run, stop), stop)
                )
            )
        log.info(
            "service.started", role=role, owner=owner, clusters=[c.name for c in settings.clusters]
        )
        await stop.wait()
        grace = max(c.poll_budget for c in settings.clusters) + 10.0
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    log.info(
        "service.stopped",
        role=role,
        commits=sum(p.commits for p in pollers),
        events=sum(p.events for p in pollers),
        cut_short=len(pending),
    )
    return 0
