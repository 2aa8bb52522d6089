"""Delivery benchmark: how many events a second ``SinkWorker`` + ``WebhookSink`` delivers to a fast
local receiver, next to what bare HTTP allows, and how many Redis calls each event costs.

Run it with ``make bench`` (or ``python -m bench.deliver --help``). It starts a receiver as a
separate process (a bare aiohttp ``web.Server`` that verifies every request with the
``standardwebhooks`` library the way ``testkit.receivers.WebhookReceiver`` does, then only counts;
on 2 cores it gets one to itself) and its own ``redis-server`` on a free port, then measures, side
by side in one run:

1. ``aiohttp baseline``: 16 coroutines POST the same signed bodies (signed before the clock
   starts) with one aiohttp session. The floor: what HTTP and the receiver allow.
2. ``WebhookSink.deliver, no worker``: the same 16 coroutines call the sink, one event each.
   The difference to 1 is the sink (signing, headers, answer classification).
3. ``SinkWorker + WebhookSink``: the real worker reading a backlog of events published to the
   stream beforehand, at 2,000, 200 and 20 viewers (per-viewer ordering: a viewer's next event
   waits until the previous one is delivered, so few viewers mean little parallelism).
4. The same in batch mode (``batch_size``, default 50), with ``batch_wait`` at its default (1s)
   and at 20 ms: a batch that does not fill waits ``batch_wait``, and per-viewer ordering makes
   the last events of a backlog such batches.
5. ``SinkWorker + null sink``: the worker with a sink that answers Delivered at once: its own
   ceiling (Redis, scheduling, bookkeeping) without HTTP.

Events/s is measured from the first completion to the last (a response for 1-2; an
acknowledgement, i.e. XACK done, for 3-5), counting the events completed after the first one.
Every worker pass starts from a flushed Redis with the consumer group made and the events
published; it ends when every event is acknowledged, and is checked: XPENDING 0, the receiver
verified exactly the events sent, none refused. ``INFO commandstats`` (reset before the worker
starts) gives Redis calls per 1,000 events; ``INFO cpu`` and each process's CPU time give who
used the two cores.

``--rows WORD --profile`` prints a cProfile (CPU time, timed region only) of one pass of the
first row whose label holds WORD instead; for a sampling profile without cProfile's overhead:
``py-spy record -o deliver.svg -- python -m bench.deliver --rows "WebhookSink @ 2000" --runs 3``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import cProfile
import gc
import io
import json
import pstats
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from redis.asyncio import Redis
from redis.utils import HIREDIS_AVAILABLE
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from bench.poll import BenchError, load, machine
from notifier import __version__
from notifier.events import CONTENT_TYPE, Event, decode_event
from notifier.keys import sink_group
from notifier.logs import configure_logging
from notifier.sinks.base import Batching, Delivered
from notifier.sinks.control import SinkControl
from notifier.sinks.stream import SinkStream
from notifier.sinks.webhook import WebhookSink, WebhookSinkSettings, sign
from notifier.sinks.webhook.config import signing_key
from notifier.sinks.webhook.sink import BATCH_CONTENT_TYPE
from notifier.sinks.worker import SinkWorker
from testkit.args import int_list, positive_int
from testkit.redis_procs import RedisServer
from testkit.sink_support import KEYS, create_group, make_events, publish

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence

    from notifier.sinks.base import Outcome

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "deliver.md"
SECRET = "whsec_" + base64.b64encode(b"storm-notifier-delivery-bench-32").decode()
SINK = "bench"
GOAL = 2000.0
BASELINE = "aiohttp baseline"
SINK_ONLY = "WebhookSink.deliver, no worker"
NULL_SINK = "SinkWorker + null sink"
WARM_UP_EVENTS = 2000
SHORT_WAIT = 0.02  # batch_wait of the second batch row: the default (1s) against a short one
PASS_TIMEOUT = 120.0
READ_BATCHED = 100  # entries per XREADGROUP below which reads are called "not batched"


# --- the receiver, in its own process ---------------------------------------------------------


class Counting:
    """The receiver's request handler: verify as ``WebhookReceiver`` does, then only count.

    A request is accepted (200) when its ``webhook-timestamp`` is whole seconds and
    ``standardwebhooks`` verifies it; the event ids are the ``webhook-id`` header, or for a
    batch the ``id`` of each element of the JSON array. Anything else is refused (401).
    """

    def __init__(self) -> None:
        self._webhook = Webhook(SECRET)
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.refused = 0
        self.ids: list[str] = []
        self.first = 0.0
        self.last = 0.0

    async def __call__(self, request: web.BaseRequest) -> web.Response:
        body = await request.read()
        now = time.monotonic()
        self.requests += 1
        headers = request.headers
        if request.method != "POST" or not self._verify(body, headers):
            self.refused += 1
            return web.Response(status=401)
        if headers.get("Content-Type") == BATCH_CONTENT_TYPE:
            self.ids += [event["id"] for event in json.loads(body)]
        else:
            self.ids.append(headers["webhook-id"])
        self.first = self.first or now
        self.last = now
        return web.Response()

    def _verify(self, body: bytes, headers: Mapping[str, str]) -> bool:
        if not headers.get("webhook-timestamp", "").isdigit():
            return False
        try:
            self._webhook.verify(body, dict(headers), json_parse=False)
        except (WebhookVerificationError, ValueError):
            return False
        return True

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "refused": self.refused,
            "events": len(self.ids),
            "unique": len(set(self.ids)),
            "first": self.first,
            "last": self.last,
            "cpu": time.process_time(),
        }


async def serve_receiver(handler: Counting | None = None) -> None:
    """The child: a counting webhook receiver on a free port; commands on stdin, answers on stdout.

    ``stats`` answers the counts since the last ``reset``; end of stdin stops it.
    """
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    handler = handler or Counting()
    runner = web.ServerRunner(web.Server(handler, access_log=None))
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        _answer({"url": f"http://127.0.0.1:{runner.addresses[0][1]}/hook"})
        while line := await reader.readline():
            command = line.decode().strip()
            if command == "reset":
                handler.reset()
                gc.collect()
                _answer({})
            elif command == "stats":
                _answer(handler.stats())
            else:
                _answer({"error": f"unknown command {command!r}"})
    finally:
        await runner.cleanup()


def _answer(reply: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()


@dataclass(frozen=True, slots=True)
class ReceiverStats:
    """What the receiver saw since its last reset."""

    requests: int
    refused: int
    events: int
    unique: int  # distinct event ids
    first: float
    last: float
    cpu: float


class Receiver:
    """The receiver process, seen from the benchmark."""

    def __init__(self, process: asyncio.subprocess.Process, url: str) -> None:
        self.process = process
        self.url = url

    async def ask(self, command: str) -> dict[str, Any]:
        stdin, stdout = self.process.stdin, self.process.stdout
        if stdin is None or stdout is None:
            raise BenchError("the receiver's stdin and stdout are not pipes")
        stdin.write(command.encode() + b"\n")
        await stdin.drain()
        line = await asyncio.wait_for(stdout.readline(), 30)
        if not line:
            raise BenchError(f"the receiver exited ({await self.process.wait()})")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise BenchError(f"the receiver: {reply['error']}")
        return reply

    async def reset(self) -> None:
        await self.ask("reset")

    async def stats(self) -> ReceiverStats:
        return ReceiverStats(**await self.ask("stats"))


@contextlib.asynccontextmanager
async def receiver_process(
    ready_within: float = 30.0, command: Sequence[str] = ("bench.deliver", "--receiver")
) -> AsyncIterator[Receiver]:
    """Start the receiver (``python -m bench.deliver --receiver``, or ``command`` after ``-m``);
    close its stdin on exit."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        *command,
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        if process.stdout is None:
            raise BenchError("the receiver's stdout is not a pipe")
        line = await asyncio.wait_for(process.stdout.readline(), ready_within)
        if not line:
            raise BenchError(f"the receiver exited ({await process.wait()}) before listening")
        yield Receiver(process, str(json.loads(line)["url"]))
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


# --- what one pass measures -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    """One timed pass of one row."""

    events: int
    requests: int
    first_count: int  # events completed in the first completion (one response, one XACK)
    startup: float  # start to the first completion
    seconds: float  # first completion to the last
    wall: float  # start to the last completion
    cpu_bench: float  # CPU seconds of this process (client, worker, redis-py)
    cpu_receiver: float
    cpu_redis: float
    receiver_rate: float  # events/s between the receiver's first and last arrival
    rate99: float  # events/s from the first completion to the one reaching 99% of the events
    redis: dict[str, tuple[int, int]] = field(default_factory=dict)  # command: (calls, usec)

    @property
    def rate(self) -> float:
        """Events a second from the first completion to the last."""
        return (self.events - self.first_count) / self.seconds if self.seconds else 0.0

    def redis_calls(self) -> int:
        return sum(calls for calls, _ in self.redis.values())


@dataclass(slots=True)
class Usage:
    """CPU seconds of the three processes at one moment."""

    bench: float
    receiver: float
    redis: float
    stats: ReceiverStats


async def usage(redis: Redis, receiver: Receiver) -> Usage:
    cpu = await redis.info("cpu")
    stats = await receiver.stats()
    return Usage(
        bench=time.process_time(),
        receiver=stats.cpu,
        redis=float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]),
        stats=stats,
    )


def check_receiver(name: str, stats: ReceiverStats, events: int, requests: int | None) -> None:
    """Every event verified once, none refused (and one request each if ``requests``)."""
    if (
        stats.refused
        or stats.events != events
        or stats.unique != events
        or (requests is not None and stats.requests != requests)
    ):
        raise BenchError(
            f"{name}: the receiver verified {stats.events} events ({stats.unique} distinct) in "
            f"{stats.requests} requests ({stats.refused} refused); expected {events} events"
            + (f" in {requests} requests" if requests is not None else "")
        )


def receiver_rate(stats: ReceiverStats) -> float:
    span = stats.last - stats.first
    return (stats.events - 1) / span if span > 0 else 0.0


# --- the rows ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Bench:
    """What every row shares: the receiver, Redis, the events and the options."""

    receiver: Receiver
    redis: Redis
    concurrency: int
    events: dict[int, list[dict[str, Any]]]  # viewers -> events, all of the same count
    profiler: cProfile.Profile | None = None  # enabled around the timed region of each pass

    def settings(self, batch_size: int = 1, batch_wait: float | None = None) -> WebhookSinkSettings:
        extra = {} if batch_wait is None else {"batch_wait": batch_wait}
        return WebhookSinkSettings.model_validate(
            {
                "name": SINK,
                "url": self.receiver.url,
                "secret": SECRET,
                "concurrency": self.concurrency,
                "batch_size": batch_size,
                **extra,
            }
        )


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the report."""

    name: str
    viewers: int
    run: Callable[[Bench, int], Awaitable[Sample]]  # (bench, events) -> one pass
    batch_size: int = 1
    worker: bool = False
    short: str = ""  # column heading in the Redis table


def signed_requests(events: Sequence[dict[str, Any]]) -> list[tuple[bytes, dict[str, str]]]:
    """Bodies and headers exactly as ``WebhookSink`` sends them one event a request."""
    keys = [
        signing_key(secret)
        for secret in WebhookSinkSettings.model_validate(
            {"name": SINK, "url": "http://x", "secret": SECRET}
        ).secret
    ]
    timestamp = int(time.time())
    out = []
    for event in events:
        body: bytes = event["body"]
        headers = {
            "Content-Type": CONTENT_TYPE,
            "User-Agent": f"storm-notifier/{__version__}",
            "webhook-id": event["id"],
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(keys, event["id"], timestamp, body),
        }
        out.append((body, headers))
    return out


async def closed_loop(
    count: int, concurrency: int, one: Callable[[int], Awaitable[None]]
) -> list[float]:
    """``concurrency`` coroutines run ``one(i)`` for i in 0..count-1; each completion's time."""
    done: list[float] = []
    numbers = iter(range(count))

    async def loop() -> None:
        for number in numbers:
            await one(number)
            done.append(time.perf_counter())

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return done


async def measured(
    b: Bench, name: str, run: Callable[[], Awaitable[tuple[float, list[tuple[float, int]]]]]
) -> tuple[float, list[tuple[float, int]], Usage, Usage]:
    """Reset the receiver, collect garbage, then run: (start, completions, usage before/after)."""
    await b.receiver.reset()
    gc.collect()
    before = await usage(b.redis, b.receiver)
    if b.profiler is not None:
        b.profiler.enable()
    try:
        started, completions = await run()
    finally:
        if b.profiler is not None:
            b.profiler.disable()
    after = await usage(b.redis, b.receiver)
    if not completions:
        raise BenchError(f"{name}: nothing completed")
    return started, completions, before, after


def sample(
    started: float,
    completions: list[tuple[float, int]],
    before: Usage,
    after: Usage,
    *,
    requests: int,
    redis: dict[str, tuple[int, int]] | None = None,
) -> Sample:
    first, last = completions[0][0], completions[-1][0]
    events = sum(n for _, n in completions)
    done, rate99 = 0, 0.0
    for moment, n in completions:
        done += n
        if done >= 0.99 * events:
            span = moment - first
            rate99 = (done - completions[0][1]) / span if span > 0 else 0.0
            break
    return Sample(
        events=events,
        requests=requests,
        first_count=completions[0][1],
        startup=first - started,
        seconds=last - first,
        wall=last - started,
        cpu_bench=after.bench - before.bench,
        cpu_receiver=after.receiver - before.receiver,
        cpu_redis=after.redis - before.redis,
        receiver_rate=receiver_rate(after.stats),
        rate99=rate99,
        redis=redis or {},
    )


async def baseline_pass(b: Bench, count: int) -> Sample:
    """Bare aiohttp: pre-signed requests, ``concurrency`` in flight."""
    requests = signed_requests(b.events[max(b.events)][:count])
    url = b.receiver.url
    connector = aiohttp.TCPConnector(limit=b.concurrency)
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:

        async def one(number: int) -> None:
            body, headers = requests[number]
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    raise BenchError(f"{BASELINE}: HTTP {response.status}")

        async def run() -> tuple[float, list[tuple[float, int]]]:
            started = time.perf_counter()
            done = await closed_loop(count, b.concurrency, one)
            return started, [(t, 1) for t in done]

        started, completions, before, after = await measured(b, BASELINE, run)
    check_receiver(BASELINE, after.stats, count, count)
    return sample(started, completions, before, after, requests=count)


async def sink_pass(b: Bench, count: int) -> Sample:
    """``WebhookSink.deliver`` of one event at a time, ``concurrency`` in flight, no worker."""
    events = [
        decode_event(KEYS.cluster, f"1-{i}", {b"event": e["body"]})
        for i, e in enumerate(b.events[max(b.events)][:count])
    ]
    sink = WebhookSink(b.settings())
    try:

        async def one(number: int) -> None:
            outcome = await sink.deliver([events[number]])
            if not isinstance(outcome, Delivered):
                raise BenchError(f"{SINK_ONLY}: {outcome}")

        async def run() -> tuple[float, list[tuple[float, int]]]:
            started = time.perf_counter()
            done = await closed_loop(count, b.concurrency, one)
            return started, [(t, 1) for t in done]

        started, completions, before, after = await measured(b, SINK_ONLY, run)
    finally:
        await sink.aclose()
    check_receiver(SINK_ONLY, after.stats, count, count)
    return sample(started, completions, before, after, requests=count)


class TimedStream(SinkStream):
    """The worker's ``SinkStream``, noting when each acknowledgement is done (and how many)."""

    def __init__(self, redis: Redis, expected: int) -> None:
        super().__init__(redis, KEYS, SINK)
        self.expected = expected
        self.acked: list[tuple[float, int]] = []
        self.total = 0
        self.all_acked = asyncio.Event()

    async def ack(self, entry_ids: list[str], retried: list[str]) -> None:
        await super().ack(entry_ids, retried)
        self.acked.append((time.perf_counter(), len(entry_ids)))
        self.total += len(entry_ids)
        if self.total >= self.expected:
            self.all_acked.set()


class NullSink:
    """Delivered at once: the worker's own ceiling."""

    batching = Batching()

    async def deliver(self, events: Sequence[Event]) -> Outcome:  # noqa: ARG002 - the protocol's
        return Delivered(status=200)

    async def aclose(self) -> None:
        return None


def commandstats(info: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """``INFO commandstats`` as command -> (calls, usec), the benchmark's own commands left out."""
    out = {}
    for key, value in info.items():
        name = key.removeprefix("cmdstat_")
        if name.startswith(("config", "info")):
            continue
        out[name] = (int(value["calls"]), int(value["usec"]))
    return out


async def worker_pass(
    b: Bench, count: int, viewers: int, batch_size: int, batch_wait: float | None, *, null: bool
) -> Sample:
    """The real worker on a backlog of ``count`` events of ``viewers`` viewers."""
    name = NULL_SINK if null else f"SinkWorker, {viewers} viewers, batch {batch_size}"
    redis = b.redis
    await redis.flushdb()
    await create_group(redis, SINK, KEYS)
    await publish(redis, b.events[viewers][:count], KEYS)
    settings = b.settings(batch_size, batch_wait)
    sink: WebhookSink | NullSink = NullSink() if null else WebhookSink(settings)
    control = SinkControl(SINK)
    maxlen = max(count, 100_000)
    stream = TimedStream(redis, count)  # to time the acknowledgements
    worker = SinkWorker(
        sink,
        settings,
        control,
        cluster=KEYS.cluster,
        redis=redis,
        keys=KEYS,
        owner="bench",
        maxlen=maxlen,
        concurrency=b.concurrency,
        rng=random.Random(0),
        stream=stream,
    )

    async def run() -> tuple[float, list[tuple[float, int]]]:
        await redis.config_resetstat()
        stop = asyncio.Event()
        started = time.perf_counter()
        task = asyncio.create_task(worker.run(stop), name="worker")
        waiter = asyncio.create_task(stream.all_acked.wait())
        try:
            await asyncio.wait([task, waiter], timeout=PASS_TIMEOUT, return_when="FIRST_COMPLETED")
        finally:
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
            stop.set()
            await task  # raises what the worker raised
            await sink.aclose()
        if not stream.all_acked.is_set():
            raise BenchError(f"{name}: {stream.total} of {count} acknowledged in {PASS_TIMEOUT}s")
        return started, stream.acked

    started, completions, before, after = await measured(b, name, run)
    calls = commandstats(await redis.info("commandstats"))
    left = int((await redis.xpending(KEYS.events, sink_group(SINK)))["pending"])
    if left or control.delivered != count or stream.total != count:
        raise BenchError(
            f"{name}: {control.delivered} delivered, {stream.total} acknowledged, {left} pending"
        )
    if not null:
        check_receiver(name, after.stats, count, count if batch_size == 1 else None)
    requests = 0 if null else after.stats.requests
    return sample(started, completions, before, after, requests=requests, redis=calls)


def rows(viewers: Sequence[int], batch_size: int) -> list[Row]:
    """Every row, in report order."""

    def worker_row(n: int, size: int = 1, wait: float | None = None, *, null: bool = False) -> Row:
        async def run(b: Bench, count: int) -> Sample:
            return await worker_pass(b, count, n, size, wait, null=null)

        if null:
            name, short = f"{NULL_SINK} (no HTTP)", f"null sink, {n:,} viewers"
        elif size > 1:
            name = f"SinkWorker + WebhookSink, batch_size {size}"
            short = f"batch {size}"
            if wait is not None:
                name += f", batch_wait {wait * 1000:.0f}ms"
                short += f", wait {wait * 1000:.0f}ms"
        else:
            name, short = "SinkWorker + WebhookSink", f"{n:,} viewers"
        return Row(name, n, run, batch_size=size, worker=True, short=short)

    most = max(viewers)
    return [
        Row(BASELINE, most, baseline_pass),
        Row(SINK_ONLY, most, sink_pass),
        *(worker_row(n) for n in viewers),
        worker_row(most, batch_size),
        worker_row(most, batch_size, SHORT_WAIT),
        worker_row(most, null=True),
    ]


# --- running ----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def bench_context(args: argparse.Namespace, url: str) -> AsyncIterator[Bench]:
    redis = Redis.from_url(url, socket_connect_timeout=5.0, socket_timeout=30.0)
    try:
        async with receiver_process() as receiver:
            events = {n: make_events(args.events, n) for n in args.viewers}
            yield Bench(receiver, redis, args.concurrency, events)
    finally:
        await redis.aclose()


def selected(args: argparse.Namespace) -> list[Row]:
    every = rows(args.viewers, args.batch_size)
    if not args.rows:
        return every
    keep = [r for r in every if any(word.lower() in label(r).lower() for word in args.rows)]
    if not keep:
        raise BenchError(f"no row matches {args.rows}; rows: {[label(r) for r in every]}")
    return keep


def label(row: Row) -> str:
    return f"{row.name} @ {row.viewers} viewers"


async def run(args: argparse.Namespace, url: str) -> dict[str, list[Sample]]:
    """One warm-up pass of each row, then ``args.runs`` interleaved rounds."""
    async with bench_context(args, url) as b:
        chosen = selected(args)
        for row in chosen:
            print(f"  warm-up: {label(row)}", file=sys.stderr)
            await row.run(b, min(WARM_UP_EVENTS, args.events))
        samples: dict[str, list[Sample]] = {label(row): [] for row in chosen}
        for number in range(args.runs):
            shift = number % len(chosen)
            for row in chosen[shift:] + chosen[:shift]:
                print(f"  round {number + 1}/{args.runs}: {label(row)}", file=sys.stderr)
                samples[label(row)].append(await row.run(b, args.events))
    return samples


async def profile(args: argparse.Namespace, url: str) -> str:
    """cProfile (CPU time) of one pass of the first matching row, after a warm-up pass.

    Only the timed region is profiled (not publishing the events); the timer is the process's
    CPU time, so time spent waiting for the receiver or Redis, or preempted, is not counted.
    """
    async with bench_context(args, url) as b:
        row = selected(args)[0]
        await row.run(b, min(WARM_UP_EVENTS, args.events))
        profiler = b.profiler = cProfile.Profile(time.process_time)
        result = await row.run(b, args.events)
    out = io.StringIO()
    print(
        f"{label(row)}: {result.rate:,.0f} events/s under cProfile, "
        f"{result.cpu_bench / result.events * 1e6:,.0f} µs CPU per event",
        file=out,
    )
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats(pstats.SortKey.TIME).print_stats(args.top)
    stats.sort_stats(pstats.SortKey.CUMULATIVE).print_stats(args.top)
    return out.getvalue()


# --- the report -------------------------------------------------------------------------------


def pct(cpu: float, wall: float) -> str:
    return f"{cpu / wall:.0%}" if wall else "-"


def report(
    samples: dict[str, list[Sample]],
    chosen: list[Row],
    args: argparse.Namespace,
    redis_version: str,
    loads: tuple[str, str],
) -> str:
    """The Markdown report."""
    hiredis = "hiredis parser" if HIREDIS_AVAILABLE else "pure-Python parser (no hiredis)"
    lines = [
        f"# Delivery benchmark: {args.events:,} events, concurrency {args.concurrency}",
        "",
        f"- machine: {machine()}",
        (
            f"- receiver: its own process on 127.0.0.1, a bare aiohttp `web.Server` verifying "
            f"each request with standardwebhooks {version('standardwebhooks')} (as "
            "`testkit.receivers.WebhookReceiver` does) and counting"
        ),
        (
            f'- redis-server {redis_version}, its own process (`--save "" --appendonly no`); '
            f"redis-py {version('redis')}, {hiredis}"
        ),
        (
            "- worker rows: the events (`testkit.sink_support.make_events`) are published before "
            "the worker starts, so it reads a backlog; events/s runs from the first "
            "acknowledgement to the last (XACK done), the others from the first response to the "
            "last; every worker pass ends with XPENDING 0 and the receiver having verified each "
            "event once"
        ),
        (
            f"- runs: 1 warm-up ({min(WARM_UP_EVENTS, args.events):,} events) + {args.runs} "
            "timed passes per row, interleaved (the order rotates each round); "
            f"ratio = median events/s over the median of `{BASELINE}`"
        ),
        f"- load average (1 min) at start {loads[0]}, at end {loads[1]}",
        "",
    ]
    lines += main_table(samples, chosen)
    lines += headline(samples, chosen)
    lines += redis_table(samples, [r for r in chosen if r.worker])
    lines.append("")
    return "\n".join(lines)


def main_table(samples: dict[str, list[Sample]], chosen: list[Row]) -> list[str]:
    """One line per row: rates, ratio, CPU of the three processes, Redis calls."""
    base_key = next((label(r) for r in chosen if r.name == BASELINE), None)
    base = statistics.median(s.rate for s in samples[base_key]) if base_key else None
    lines = [
        (
            "| row | viewers | requests | events/s (median) | best | ratio to baseline "
            "| events/s to 99% | first ack ms | CPU: bench / receiver / redis (of one core) "
            "| bench CPU µs/event | Redis calls / 1,000 events |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for row in chosen:
        runs = samples[label(row)]
        s = runs[0]
        rate = statistics.median(x.rate for x in runs)
        wall = statistics.median(x.wall for x in runs)
        cpu = " / ".join(
            pct(statistics.median(getattr(x, part) for x in runs), wall)
            for part in ("cpu_bench", "cpu_receiver", "cpu_redis")
        )
        per_event = statistics.median(x.cpu_bench for x in runs) / s.events * 1e6
        calls = (
            f"{statistics.median(x.redis_calls() for x in runs) / s.events * 1000:.1f}"
            if row.worker
            else "-"
        )
        ratio = f"{rate / base:.2f}" if base else "-"
        startup = f"{statistics.median(x.startup for x in runs) * 1000:.0f}" if row.worker else "-"
        requests = f"{s.requests:,}" if s.requests else "-"
        lines.append(
            f"| {row.name} | {row.viewers:,} | {requests} | {rate:,.0f} "
            f"| {max(x.rate for x in runs):,.0f} | {ratio} "
            f"| {statistics.median(x.rate99 for x in runs):,.0f} | {startup} | {cpu} "
            f"| {per_event:,.0f} | {calls} |"
        )
    return lines


def headline(samples: dict[str, list[Sample]], chosen: list[Row]) -> list[str]:
    """The goal per worker row, how well Redis calls are batched, the receiver's headroom."""
    lines = ["", f"**Headline: more than {GOAL:,.0f} events/s to a fast local receiver**", ""]
    for row in chosen:
        if row.worker and row.name != f"{NULL_SINK} (no HTTP)":
            runs = samples[label(row)]
            rate = statistics.median(x.rate for x in runs)
            verdict = "holds" if rate > GOAL else "does NOT hold"
            lines.append(
                f"- {row.name}, {row.viewers:,} viewers: {rate:,.0f} events/s "
                f"(best {max(x.rate for x in runs):,.0f}): >{GOAL:,.0f}/s {verdict}"
            )
    workers = [r for r in chosen if r.worker]
    if workers:
        lines += ["", "**Redis: entries per XREADGROUP (up to 500) and per XACK (up to 256)**", ""]
    for row in workers:
        runs = samples[label(row)]
        per_read = statistics.median(
            x.events / max(x.redis.get("xreadgroup", (1, 0))[0], 1) for x in runs
        )
        per_ack = statistics.median(x.events / max(x.redis.get("xack", (1, 0))[0], 1) for x in runs)
        verdict = "batched" if per_read >= READ_BATCHED else "NOT batched: a read every few events"
        lines.append(
            f"- {row.name}, {row.viewers:,} viewers: {per_read:,.0f} entries per XREADGROUP "
            f"({verdict}), {per_ack:,.0f} per XACK"
        )
    base_key = next((label(r) for r in chosen if r.name == BASELINE), None)
    if base_key:
        runs = samples[base_key]
        busy = statistics.median(x.cpu_receiver for x in runs)
        span = statistics.median(x.wall for x in runs)
        seen = statistics.median(x.receiver_rate for x in runs)
        lines += [
            "",
            (
                f"Receiver under the baseline: {seen:,.0f} requests/s as it saw them, "
                f"{busy / span:.0%} of one core busy; its own ceiling is about "
                f"{runs[0].requests / busy:,.0f} requests per CPU second"
                if busy
                else "Receiver under the baseline: no CPU time measured"
            ),
        ]
    return lines


def redis_table(samples: dict[str, list[Sample]], workers: list[Row]) -> list[str]:
    """Calls per command per 1,000 events, one column per worker row."""
    if not workers:
        return []
    commands = sorted({c for r in workers for s in samples[label(r)] for c in s.redis})
    lines = [
        "",
        "## Redis calls per 1,000 events (`INFO commandstats`, median pass)",
        "",
        "Each cell: calls per 1,000 events (calls in the pass).",
        "",
        "| command | " + " | ".join(r.short for r in workers) + " |",
        "|---|" + "---:|" * len(workers),
    ]
    for command in commands:
        cells = []
        for r in workers:
            runs = samples[label(r)]
            count = statistics.median(s.redis.get(command, (0, 0))[0] for s in runs)
            cells.append(f"{count / runs[0].events * 1000:.1f} ({count:,.0f})")
        lines.append(f"| {command} | " + " | ".join(cells) + " |")
    cells = []
    for r in workers:
        runs = samples[label(r)]
        usec = statistics.median(sum(u for _, u in s.redis.values()) for s in runs)
        cells.append(f"{usec / runs[0].events:.1f}")
    lines.append("| *Redis server µs per event* | " + " | ".join(cells) + " |")
    return lines


# --- command line -----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The benchmark's options."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.deliver",
        description="Time webhook delivery by SinkWorker next to bare aiohttp (bench/README.md)",
    )
    parser.add_argument("--events", type=positive_int, default=20_000, help="events per pass")
    parser.add_argument(
        "--viewers",
        type=int_list("viewer counts", descending=True),
        default=[2000, 200, 20],
        metavar="N,N",
        help="viewer counts of the worker rows (default 2000,200,20); the largest for the others",
    )
    parser.add_argument("--concurrency", type=positive_int, default=16, help="requests in flight")
    parser.add_argument("--batch-size", type=positive_int, default=50, help="of the batch row")
    parser.add_argument("--runs", type=positive_int, default=3, help="timed passes per row")
    parser.add_argument(
        "--rows",
        nargs="+",
        metavar="WORD",
        help="only the rows whose label (name @ N viewers) contains one of the words",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead of the benchmark, print a cProfile of one pass of the first --rows row",
    )
    parser.add_argument("--top", type=positive_int, default=25, help="rows of the profile")
    parser.add_argument("--receiver", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (or a profile), print the report and write bench/results/deliver.md."""
    args = parse_args(argv)
    if args.receiver:
        asyncio.run(serve_receiver())
        return 0
    configure_logging(fmt="json", level="warning")
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="bench-deliver-") as directory,
        RedisServer(Path(directory)) as server,
    ):
        print(f"redis-server at {server.url}", file=sys.stderr)

        async def measure() -> str:
            if args.profile:
                return await profile(args, server.url)
            start_load = load()
            samples = await run(args, server.url)
            info = Redis.from_url(server.url)
            try:
                redis_version = str((await info.info("server"))["redis_version"])
            finally:
                await info.aclose()
            return report(samples, selected(args), args, redis_version, (start_load, load()))

        text = asyncio.run(measure())
    print(text)
    if not args.profile:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text + "\n")
        print(f"written to {RESULTS} in {time.perf_counter() - started:.0f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
