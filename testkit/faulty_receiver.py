"""A webhook receiver that misbehaves on cue: the receiver faults the delivery must survive.

``FaultyReceiver`` is a ``WebhookReceiver`` (a real aiohttp server on 127.0.0.1 verifying
every request's Standard Webhooks signature) whose ``fault`` says how the next requests are
answered; ``None`` answers 200 at once. A test sets a fault, lets the sink meet it, clears it
and checks that everything arrives; ``hits`` counts, per fault kind, the requests that met
one, so a test can say how often it tried the fault.

=============  ================================================================================
``Hang()``     never answers: the request is held until the receiver closes (the sink's
               timeout ends it on the sender's side)
``Hold()``     holds the request until ``release()``, then answers 200 (a receiver that
               stalls for a while: the test decides how long, so the sender's state is still)
``Reset()``    reads the request, then resets the TCP connection (``SO_LINGER`` 0): no answer
``Status(n)``  answers ``n`` (a 5xx, a 410...) with an optional body and headers
``Slow(s)``    answers 200 after ``s`` seconds; ``in_flight`` and ``most_in_flight`` say how
               many such requests overlapped
``Stall()``    answers 200 with a ``Content-Length`` of 1,000, then sends no body at all:
               the request is held until the receiver closes
``Huge(n)``    answers 200 with a body of ``n`` bytes, streamed from one zero-filled chunk so
               the receiver itself holds almost nothing; ``body_sent`` records, per request,
               how many bytes went out before the sender stopped reading (it hangs up once it
               has read what it needs, so the number stays far below ``n``)
=============  ================================================================================

Only requests answered 2xx are recorded in ``received`` (as ``WebhookReceiver`` does); a
request that met ``Hang`` or ``Reset`` never is.

``delivering`` is the rest of a receiver-fault test: a real ``SinkWorker`` of a webhook sink
``hooks`` on a real redis-server delivering to the receiver (its reads counted by
``CountingStream``), and a ``LaneWatch`` of the lane; ``check_arrived`` holds what the
receiver got to the events published (every one at least once, each viewer's in order).
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections import Counter
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from notifier.metrics import Metrics
from notifier.sinks.control import SinkControl
from notifier.sinks.stream import SinkStream
from notifier.sinks.webhook import WebhookSink, WebhookSinkSettings
from testkit.lane_watch import LaneWatch, lane_watch, settings_for
from testkit.receivers import Attempt, Received, WebhookReceiver
from testkit.sink_support import KEYS, SECRET, create_group, running_worker

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from redis.asyncio import Redis

    from notifier.sinks.stream import Entry

__all__ = [
    "CountingStream",
    "Fault",
    "FaultyReceiver",
    "Hang",
    "Hold",
    "Huge",
    "Reset",
    "Rig",
    "Slow",
    "Stall",
    "Status",
    "all_arrived",
    "arrivals",
    "check_arrived",
    "delivering",
    "sink_config",
    "steps",
]

CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class Hang:
    """Never answer."""

    kind = "hang"


@dataclass(frozen=True, slots=True)
class Hold:
    """Answer 200 once the receiver is released."""

    kind = "hold"


@dataclass(frozen=True, slots=True)
class Reset:
    """Reset the connection once the request is read."""

    kind = "reset"


@dataclass(frozen=True, slots=True)
class Status:
    """Answer ``status`` at once."""

    status: int
    body: bytes = b""
    headers: Mapping[str, str] | None = None
    kind = "status"


@dataclass(frozen=True, slots=True)
class Slow:
    """Answer 200 after ``delay`` seconds."""

    delay: float
    kind = "slow"


@dataclass(frozen=True, slots=True)
class Stall:
    """Answer 200, then never send the body."""

    kind = "stall"


@dataclass(frozen=True, slots=True)
class Huge:
    """Answer 200 with a body of ``size`` bytes."""

    size: int
    kind = "huge"


Fault = Hang | Hold | Reset | Status | Slow | Stall | Huge


class FaultyReceiver(WebhookReceiver):
    """A verifying webhook endpoint answering as ``fault`` says (see the module docstring)."""

    def __init__(self, secret: str, **kwargs: Any) -> None:
        super().__init__(secret, **kwargs)
        self.fault: Fault | None = None
        self.hits: Counter[str] = Counter()
        self.in_flight = 0
        self.most_in_flight = 0
        self.body_sent: list[int] = []
        self.held = 0
        self._forever = asyncio.Event()  # never set: what a hanging request waits for
        self._released = asyncio.Event()

    async def __aenter__(self) -> FaultyReceiver:
        await self.start()
        return self

    def hold(self) -> None:
        """Hold the requests from now on (``fault`` becomes ``Hold()``) until ``release``."""
        self._released.clear()
        self.fault = Hold()

    def release(self) -> None:
        """Answer the requests ``Hold`` holds (200), and any that meet it until ``hold``."""
        self._released.set()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        now = self._clock()
        if request.path != self._path or request.method != "POST":
            return web.Response(status=404)
        if not self._verify(body, request.headers):
            self._attempt(request, now, body, 401, verified=False)
            return web.Response(status=401, text="invalid signature")
        fault = self.fault
        if fault is not None:
            self.hits[fault.kind] += 1
        if isinstance(fault, Hang | Reset | Stall):
            return await self._no_answer(request, now, body, fault)
        if isinstance(fault, Status):
            self._attempt(request, now, body, fault.status)
            if 200 <= fault.status < 300:
                self._record(request, now, body)
            return web.Response(status=fault.status, body=fault.body, headers=fault.headers)
        if isinstance(fault, Huge):
            return await self._huge(request, now, body, fault.size)
        if isinstance(fault, Hold):
            self.held += 1
            try:
                await self._released.wait()
            finally:
                self.held -= 1
        elif isinstance(fault, Slow):
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            try:
                await asyncio.sleep(fault.delay)  # the receiver's slowness itself
            finally:
                self.in_flight -= 1
        self._attempt(request, now, body, 200)
        self._record(request, now, body)
        return web.Response(status=200)

    async def _no_answer(
        self, request: web.Request, now: float, body: bytes, fault: Hang | Reset | Stall
    ) -> web.StreamResponse:
        """No whole answer: none (``Hang``), a reset (``Reset``), a status and no body."""
        if isinstance(fault, Reset):
            self._attempt(request, now, body, 0)
            _reset(request)
            return web.Response(status=500)  # never sent: the connection is gone
        response = web.StreamResponse(status=200)
        if isinstance(fault, Stall):
            self._attempt(request, now, body, 200)
            response.content_length = 1000
            await response.prepare(request)
            self._record(request, now, body)  # the status is out: what the sender decides on
        else:
            self._attempt(request, now, body, 0)
        await self._forever.wait()  # until the server closes and cancels this handler
        return response

    async def _huge(
        self, request: web.Request, now: float, body: bytes, size: int
    ) -> web.StreamResponse:
        self._attempt(request, now, body, 200)
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.content_length = size
        await response.prepare(request)
        self._record(request, now, body)  # the status is out: what the sender decides on
        chunk = memoryview(bytes(CHUNK))
        sent = 0
        try:
            while sent < size:
                piece = chunk[: min(CHUNK, size - sent)]
                await response.write(piece)
                sent += len(piece)
            await response.write_eof()
        except (ConnectionError, RuntimeError):  # the sender hung up: what is expected
            pass
        finally:
            self.body_sent.append(sent)
        return response

    def _attempt(
        self, request: web.Request, now: float, body: bytes, status: int, *, verified: bool = True
    ) -> None:
        self.attempts.append(
            Attempt(now, request.method, request.path, request.headers, body, status, verified)
        )

    def _record(self, request: web.Request, now: float, body: bytes) -> None:
        headers = request.headers
        self.received.append(
            Received(
                id=headers["webhook-id"],
                timestamp=int(headers["webhook-timestamp"]),
                body=body,
                json=json.loads(body),
                headers=headers,
                content_type=headers.get("Content-Type", ""),
                time=now,
            )
        )
        if self._waiters:
            self._notify(len(self.received))


def _reset(request: web.Request) -> None:
    """Close the request's connection with a TCP RST (no FIN, no answer)."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def steps(count: int, step: str) -> dict[str, list[str]]:
    """A retry schedule: at once, then ``count - 1`` attempts ``step`` apart (±20% jitter)."""
    return {"schedule": ["0s"] + [step] * (count - 1)}


def sink_config(url: str, **extra: Any) -> dict[str, Any]:
    """The webhook sink ``hooks`` of the receiver-fault tests."""
    return {"name": "hooks", "type": "webhook", "url": url, "secret": SECRET, **extra}


class CountingStream(SinkStream):
    """The worker's view of its group, counting how much each read asks for and gets."""

    def __init__(self, redis: Redis) -> None:
        super().__init__(redis, KEYS, "hooks")
        self.asked: list[int] = []
        self.got: list[int] = []

    async def read(
        self, consumer: str, start: str, count: int, block_ms: int | None
    ) -> list[Entry]:
        entries = await super().read(consumer, start, count, block_ms)
        self.asked.append(count)
        self.got.append(len(entries))
        return entries


@dataclass
class Rig:
    """A receiver, a worker delivering to it, and the endpoint that shows the lane."""

    receiver: FaultyReceiver
    control: SinkControl
    watch: LaneWatch
    stream: CountingStream


@asynccontextmanager
async def delivering(
    redis: Redis,
    redis_url: str,
    receiver: FaultyReceiver,
    *,
    concurrency: int = 8,
    backlog: int = 10_000,
    claim_idle: float = 2.0,
    control: SinkControl | None = None,
    **sink: Any,
) -> AsyncIterator[Rig]:
    """A worker of the sink ``hooks`` (``sink`` are its settings) delivering to ``receiver``
    until the block ends, and an endpoint sharing its metrics and control."""
    config = sink_config(receiver.url, concurrency=concurrency, **sink)
    settings = WebhookSinkSettings.model_validate(config)
    metrics = Metrics()
    control = control or SinkControl("hooks")
    stream = CountingStream(redis)
    await create_group(redis, "hooks")
    async with (
        lane_watch(settings_for(redis_url, config), redis, metrics, {"hooks": control}) as watch,
        running_worker(
            WebhookSink(settings),
            settings,
            redis,
            control=control,
            concurrency=concurrency,
            claim_idle=claim_idle,
            backlog=backlog,
            metrics=metrics,
            stream=stream,
        ),
    ):
        yield Rig(receiver, control, watch, stream)


def arrivals(receiver: WebhookReceiver) -> list[dict[str, Any]]:
    """Every event accepted, in arrival order (repeats included)."""
    return [item.json for item in receiver.received]


def all_arrived(receiver: WebhookReceiver, events: list[dict[str, Any]]) -> bool:
    """Every one of ``events`` has been accepted at least once."""
    return {e["id"] for e in events} <= {e["id"] for e in arrivals(receiver)}


def check_arrived(receiver: WebhookReceiver, events: list[dict[str, Any]]) -> int:
    """Every event arrived at least once, each viewer's first arrivals in stream order, and
    nothing that was not published; returns how many arrivals were repeats."""
    got = arrivals(receiver)
    ids = [e["id"] for e in got]
    assert set(ids) == {e["id"] for e in events}
    first: dict[str, list[int]] = {}
    seen: set[str] = set()
    for event in got:
        if event["id"] not in seen:
            seen.add(event["id"])
            first.setdefault(event["subject"], []).append(event["sequence"])
    published: dict[str, list[int]] = {}
    for event in events:
        published.setdefault(event["viewer"], []).append(event["sequence"])
    assert first == published
    return len(ids) - len(seen)
