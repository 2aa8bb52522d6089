"""Events in a real stream, a sink worker running against it, and the settings and read-backs
the delivery tests share."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from notifier.events import EventType, encode_event
from notifier.fleet import OPEN, Gate
from notifier.keys import ClusterKeys, sink_group
from notifier.sinks.control import SinkControl
from notifier.sinks.stream import SinkStream
from notifier.sinks.webhook import WebhookSinkSettings
from notifier.sinks.worker import SinkWorker

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from redis.asyncio import Redis

    from notifier.metrics import Metrics
    from notifier.sinks.base import Sink
    from notifier.sinks.partition import Partition
    from notifier.sinks.settings import SinkBaseSettings
    from testkit.receivers import WebhookReceiver

KEYS = ClusterKeys("notifier", "eu-1")
EPOCH = "8a7c9d1e-1111-4222-8333-944455556666"
STREAM_KEYS = ["live-1", "live-2", "backstage"]
COUNTRIES = ["PL", "DE", "FR"]
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
FAST = {"schedule": ["0s", "50ms", "100ms", "150ms", "200ms"]}
"""A retry schedule of milliseconds: five attempts within half a second."""


def make_events(count: int, viewers: int, *, seed: int = 1) -> list[dict[str, Any]]:
    """Events in a plausible order: per viewer connected, health changes, disconnected."""
    rng = random.Random(seed)
    kinds: list[EventType] = ["viewer.health_dropped", "viewer.health_recovered"]
    out = []
    step: dict[int, int] = {}
    for sequence in range(1, count + 1):
        v = rng.randrange(viewers)
        n = step.get(v, 0)
        step[v] = n + 1
        kind: EventType = "viewer.connected" if n == 0 else kinds[n % 2]
        viewer_id = f"v_{v:04d}"
        record: dict[str, Any] = {
            "id": viewer_id,
            "streamKey": STREAM_KEYS[v % 3],
            "countryCode": COUNTRIES[v % 3],
            "deviceType": "DESKTOP",
            "browserName": "Chrome",
            "healthScore": 40 + n,
            "healthGrade": "Bad",
            "applicationId": "app-1",
            "harnessType": "STORM_MSE_VIEWER",
        }
        data: dict[str, Any] = {}
        if kind != "viewer.connected":
            data = {"previous": {"healthScore": 80, "healthGrade": "Good"}, "threshold": 50}
        event_id, body = encode_event(
            cluster=KEYS.cluster,
            event_type=kind,
            viewer_id=viewer_id,
            record=json.dumps(record).encode(),
            data=data,
            sequence=sequence,
            epoch=EPOCH,
            time_ms=1_770_000_000_000 + sequence,
        )
        out.append(
            {
                "type": kind,
                "id": event_id,
                "body": body,
                "viewer": record["id"],
                "sequence": sequence,
                "streamKey": record["streamKey"],
                "country": record["countryCode"],
            }
        )
    return out


async def publish(redis: Redis, events: list[dict[str, Any]], keys: ClusterKeys = KEYS) -> None:
    """XADD events the way the poller does."""
    async with redis.pipeline(transaction=False) as pipe:
        for event in events:
            pipe.xadd(
                keys.events, {"type": event["type"], "id": event["id"], "event": event["body"]}
            )
        await pipe.execute()


async def create_group(redis: Redis, sink: str, keys: ClusterKeys = KEYS) -> None:
    """The consumer group, as a poller or worker makes it at start-up."""
    await SinkStream(redis, keys, sink).ensure_group()


async def pending(
    redis: Redis, sink: str, keys: ClusterKeys = KEYS, *, group: str | None = None
) -> int:
    """Entries delivered to the group (the sink's, or ``group``) but not acknowledged."""
    info = await redis.xpending(keys.events, group or sink_group(sink))
    return int(info["pending"])


@asynccontextmanager
async def running_worker(
    sink: Sink,
    settings: SinkBaseSettings,
    redis: Redis,
    *,
    control: SinkControl | None = None,
    concurrency: int = 8,
    claim_idle: float = 2.0,
    lease_ttl: float = 2.0,
    keys: ClusterKeys = KEYS,
    owner: str | None = None,
    partition: Partition | None = None,
    gate: Gate = OPEN,
    backlog: int = 10_000,
    metrics: Metrics | None = None,
    stream: SinkStream | None = None,
) -> AsyncIterator[SinkControl]:
    """A SinkWorker delivering until the block ends (then a graceful stop). ``backlog``,
    ``metrics`` and ``stream`` are the worker's (``SinkWorker``)."""
    control = control or SinkControl(settings.name)
    worker = SinkWorker(
        sink,
        settings,
        control,
        cluster=keys.cluster,
        redis=redis,
        keys=keys,
        owner=owner or f"test-{uuid.uuid4().hex[:6]}",
        maxlen=100_000,
        concurrency=concurrency,
        lease_ttl=lease_ttl,
        claim_idle=claim_idle,
        rng=random.Random(0),
        partition=partition,
        gate=gate,
        backlog=backlog,
        metrics=metrics,
        stream=stream,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield control
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await sink.aclose()


def by_viewer(items: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Sequence numbers per viewer, in the order given."""
    out: dict[str, list[int]] = {}
    for item in items:
        out.setdefault(item["subject"] if "subject" in item else item["viewer"], []).append(
            item["sequence"]
        )
    return out


def webhook(url: str, **extra: Any) -> WebhookSinkSettings:
    """Settings of a webhook sink ``hooks`` posting to ``url`` with ``SECRET`` and ``FAST``."""
    return WebhookSinkSettings.model_validate(
        {"name": "hooks", "url": url, "secret": SECRET, "retry": FAST, "timeout": "2s", **extra}
    )


async def dead_letters(redis: Redis, sink: str = "hooks") -> list[dict[bytes, bytes]]:
    """The fields of a sink's dead letters, oldest first."""
    entries: list[tuple[bytes, dict[bytes, bytes]]] = await redis.xrange(KEYS.dlq(sink))  # type: ignore[assignment]
    return [fields for _, fields in entries]


def received_events(receiver: WebhookReceiver) -> list[dict[str, Any]]:
    """Every event a receiver accepted, batches unpacked, in arrival order."""
    out: list[dict[str, Any]] = []
    for item in receiver.received:
        out += item.json if isinstance(item.json, list) else [item.json]
    return out
