"""Partitions benchmark: deliveries a second with a sink split over K = 1, 2, 4 workers, to a
receiver that answers after 20 ms, at the same per-worker concurrency; and the CPU each
delivered event costs, so that a deployment can be sized.

Run it with ``make bench`` (or ``python -m bench.partitions --help``; ``--quick`` is the small
run of ``make bench-quick``). It starts a receiver as a separate process (a bare aiohttp
``web.Server`` that waits ``--delay`` before it verifies each request with ``standardwebhooks``
and counts it, as ``bench.deliver``'s does) and its own ``redis-server`` on a free port. For each
K, in interleaved rounds:

1. flush Redis, ``Layout(redis, keys, sink, K).ensure()`` (the K consumer groups, at the end of
   the empty stream), publish the events (``testkit.sink_support.make_events``);
2. start K ``SinkWorker`` + ``WebhookSink`` tasks, one per ``Partition(sink, k, K)``, each at
   ``--concurrency`` deliveries in flight;
3. stop the clock at the last acknowledgement (XACK done) of the last group: every group reads
   the whole stream, delivers its partition's events and acknowledges the others' unread.

A pass is checked: XPENDING 0 on every group, the workers delivered exactly the events
published, the receiver verified each of them once (distinct ``webhook-id``), one request each,
none refused. Deliveries/s is the events over start -> last acknowledgement; with a receiver of
latency L the ceiling is K * concurrency / L. CPU is this process's ``time.process_time`` (the
workers, redis-py, the sinks' aiohttp) and redis-server's ``INFO cpu``, per delivered event.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.utils import HIREDIS_AVAILABLE

from bench.deliver import (
    SECRET,
    Counting,
    Receiver,
    check_receiver,
    commandstats,
    receiver_process,
    serve_receiver,
    usage,
)
from bench.poll import BenchError, load, machine
from notifier import __version__
from notifier.logs import configure_logging
from notifier.sinks.control import SinkControl
from notifier.sinks.layout import Layout
from notifier.sinks.partition import Partition, partitions
from notifier.sinks.stream import SinkStream
from notifier.sinks.webhook import WebhookSink, WebhookSinkSettings
from notifier.sinks.worker import SinkWorker
from testkit.args import int_list, positive_int
from testkit.redis_procs import RedisServer
from testkit.sink_support import KEYS, make_events, publish

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "partitions.md"
SINK = "bench"
GOAL = 2.5  # K = 4 over K = 1: the receiver's latency, not one worker, is the limit
FULL = {"events": 6000, "viewers": 2000, "runs": 3}
QUICK = {"events": 1000, "viewers": 500, "runs": 1}
WARM_UP_EVENTS = 400
PASS_TIMEOUT = 300.0
LATENCY_BOUND = 0.7  # K = 1 at this share of c / L or more: the latency is the limit
SAME = 0.15  # a change of CPU per event within +-15% is called "about the same"


# --- the receiver, in its own process ---------------------------------------------------------


class Slow(Counting):
    """``bench.deliver``'s counting receiver, answering each request after ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    async def __call__(self, request: web.BaseRequest) -> web.Response:
        await asyncio.sleep(self.delay)
        return await super().__call__(request)


@contextlib.asynccontextmanager
async def slow_receiver(delay: float) -> AsyncIterator[Receiver]:
    """``bench.deliver``'s receiver process, answering after ``delay`` seconds."""
    command = ("bench.partitions", "--receiver", "--delay", str(delay * 1000))
    async with receiver_process(command=command) as receiver:
        yield receiver


# --- one pass ---------------------------------------------------------------------------------


class TimedStream(SinkStream):
    """A partition's ``SinkStream``, noting when its acknowledgements are done."""

    def __init__(self, redis: Redis, partition: Partition, expected: int) -> None:
        super().__init__(redis, KEYS, SINK, group=partition.group)
        self.expected = expected  # every group acknowledges every entry: its own and the others'
        self.total = 0
        self.first = 0.0
        self.last = 0.0
        self.all_acked = asyncio.Event()

    async def ack(self, entry_ids: list[str], retried: list[str]) -> None:
        await super().ack(entry_ids, retried)
        self.last = time.perf_counter()
        self.first = self.first or self.last
        self.total += len(entry_ids)
        if self.total >= self.expected:
            self.all_acked.set()


@dataclass(frozen=True, slots=True)
class Sample:
    """One timed pass at one K."""

    count: int  # partitions
    events: int
    shares: tuple[int, ...]  # events delivered by each partition
    startup: float  # start to the first acknowledgement of any group
    wall: float  # start to the last acknowledgement of the last group
    cpu_bench: float  # CPU seconds of this process (the K workers, redis-py, aiohttp)
    cpu_receiver: float
    cpu_redis: float
    redis_calls: int  # every command of the pass but the benchmark's own CONFIG and INFO
    acks: int  # XACK calls

    @property
    def rate(self) -> float:
        """Deliveries a second, start to the last acknowledgement."""
        return self.events / self.wall if self.wall else 0.0


@dataclass(slots=True)
class Bench:
    """What every pass shares: the receiver, Redis, the events and the options."""

    receiver: Receiver
    redis: Redis
    concurrency: int
    events: list[dict[str, Any]]

    def settings(self, count: int) -> WebhookSinkSettings:
        return WebhookSinkSettings.model_validate(
            {
                "name": SINK,
                "url": self.receiver.url,
                "secret": SECRET,
                "concurrency": self.concurrency,
                "partitions": count,
            }
        )


async def partition_pass(b: Bench, count: int, events: int) -> Sample:
    """K = ``count`` workers on a backlog of ``events`` events, until every group acknowledged."""
    name = f"K = {count}"
    redis = b.redis
    await redis.flushdb()
    outcome = await Layout(redis, KEYS, SINK, count).ensure()
    if outcome != "fresh":
        raise BenchError(f"{name}: the layout on a flushed Redis was {outcome!r}, not 'fresh'")
    await publish(redis, b.events[:events], KEYS)
    settings = b.settings(count)
    parts = partitions(SINK, count)
    streams = [TimedStream(redis, part, events) for part in parts]
    controls = [SinkControl(SINK) for _ in parts]
    sinks = [WebhookSink(settings) for _ in parts]
    workers = [
        SinkWorker(
            sink,
            settings,
            control,
            cluster=KEYS.cluster,
            redis=redis,
            keys=KEYS,
            owner=f"bench-{part.index}",
            maxlen=max(events, 100_000),
            concurrency=b.concurrency,
            rng=random.Random(part.index),
            stream=stream,
            partition=part,
        )
        for part, stream, control, sink in zip(parts, streams, controls, sinks, strict=True)
    ]
    await b.receiver.reset()
    gc.collect()
    stop = asyncio.Event()
    await redis.config_resetstat()
    before = await usage(redis, b.receiver)
    started = time.perf_counter()
    tasks = [asyncio.create_task(w.run(stop), name=f"worker-{w.partition}") for w in workers]

    async def every_group_acked() -> None:
        for stream in streams:
            await stream.all_acked.wait()

    waiter = asyncio.create_task(every_group_acked())
    try:
        await asyncio.wait([*tasks, waiter], timeout=PASS_TIMEOUT, return_when="FIRST_COMPLETED")
        after = await usage(redis, b.receiver)
        calls = commandstats(await redis.info("commandstats"))
    finally:
        waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiter
        stop.set()
        try:
            await asyncio.gather(*tasks)  # raises what a worker raised
        finally:
            for sink in sinks:
                await sink.aclose()
    acked = [s.total for s in streams]
    if not all(s.all_acked.is_set() for s in streams):
        raise BenchError(f"{name}: groups acknowledged {acked} of {events} each in {PASS_TIMEOUT}s")
    left = [int((await redis.xpending(KEYS.events, p.group))["pending"]) for p in parts]
    shares = tuple(c.delivered for c in controls)
    if any(left) or sum(shares) != events:
        raise BenchError(
            f"{name}: partitions delivered {list(shares)} (sum {sum(shares)} of {events}), "
            f"{left} pending"
        )
    check_receiver(name, await b.receiver.stats(), events, events)  # late duplicates too
    return Sample(
        count=count,
        events=events,
        shares=shares,
        startup=min(s.first for s in streams) - started,
        wall=max(s.last for s in streams) - started,
        cpu_bench=after.bench - before.bench,
        cpu_receiver=after.receiver - before.receiver,
        cpu_redis=after.redis - before.redis,
        redis_calls=sum(n for n, _ in calls.values()),
        acks=calls.get("xack", (0, 0))[0],
    )


async def run(args: argparse.Namespace, url: str) -> dict[int, list[Sample]]:
    """One warm-up pass per K, then ``args.runs`` interleaved rounds (the order rotates)."""
    redis = Redis.from_url(url, socket_connect_timeout=5.0, socket_timeout=30.0)
    try:
        async with slow_receiver(args.delay) as receiver:
            b = Bench(receiver, redis, args.concurrency, make_events(args.events, args.viewers))
            for count in args.partitions:
                print(f"  warm-up: K = {count}", file=sys.stderr)
                await partition_pass(b, count, min(WARM_UP_EVENTS, args.events))
            samples: dict[int, list[Sample]] = {count: [] for count in args.partitions}
            for number in range(args.runs):
                shift = number % len(args.partitions)
                for count in args.partitions[shift:] + args.partitions[:shift]:
                    print(f"  round {number + 1}/{args.runs}: K = {count}", file=sys.stderr)
                    s = await partition_pass(b, count, args.events)
                    print(f"    {s.rate:,.0f} deliveries/s", file=sys.stderr)
                    samples[count].append(s)
    finally:
        await redis.aclose()
    return samples


# --- the report -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Summary:
    """The medians of one K's passes."""

    count: int
    rate: float
    best: float
    ceiling: float  # K * concurrency / delay
    latency: float  # seconds a delivery took as the workers saw it: K * concurrency / rate
    largest_share: float  # the busiest partition's share of the events
    bench_us: float  # CPU µs per delivered event: this process
    redis_us: float  # redis-server
    receiver_us: float
    bench_core: float  # this process's CPU over the pass, as a share of one core
    startup: float
    calls: float  # Redis calls per 1,000 delivered events
    per_ack: float  # entries per XACK (each group acknowledges every entry)

    @classmethod
    def of(cls, runs: list[Sample], concurrency: int, delay: float) -> Summary:
        s = runs[0]
        med = statistics.median
        return cls(
            count=s.count,
            rate=med(x.rate for x in runs),
            best=max(x.rate for x in runs),
            ceiling=s.count * concurrency / delay,
            latency=s.count * concurrency / med(x.rate for x in runs),
            largest_share=med(max(x.shares) / x.events for x in runs),
            bench_us=med(x.cpu_bench / x.events for x in runs) * 1e6,
            redis_us=med(x.cpu_redis / x.events for x in runs) * 1e6,
            receiver_us=med(x.cpu_receiver / x.events for x in runs) * 1e6,
            bench_core=med(x.cpu_bench / x.wall for x in runs),
            startup=med(x.startup for x in runs),
            calls=med(x.redis_calls / x.events for x in runs) * 1000,
            per_ack=med(x.events * x.count / max(x.acks, 1) for x in runs),
        )


def ratio_of(summaries: list[Summary], count: int) -> float | None:
    """K = ``count``'s deliveries/s over K = 1's, if both were measured."""
    by = {s.count: s for s in summaries}
    if count not in by or 1 not in by or not by[1].rate:
        return None
    return by[count].rate / by[1].rate


def table(summaries: list[Summary]) -> list[str]:
    """One line per K."""
    lines = [
        (
            "| K | deliveries/s (median) | best | ratio to K = 1 | ceiling K·c/L | of ceiling "
            "| latency seen ms | busiest partition | bench CPU s / 1,000 events "
            "| bench µs/event | bench CPU (of one core) | redis-server µs/event "
            "| receiver µs/event | Redis calls / 1,000 events | entries per XACK | first ack ms |"
        ),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summaries:
        ratio = ratio_of(summaries, s.count)
        lines.append(
            f"| {s.count} | {s.rate:,.0f} | {s.best:,.0f} "
            f"| {'-' if ratio is None else f'{ratio:.2f}'} | {s.ceiling:,.0f} "
            f"| {s.rate / s.ceiling:.0%} | {s.latency * 1000:.1f} "
            f"| {s.largest_share:.1%} (1/K = {1 / s.count:.1%}) | {s.bench_us / 1000:.3f} "
            f"| {s.bench_us:,.0f} | {s.bench_core:.0%} | {s.redis_us:,.0f} "
            f"| {s.receiver_us:,.0f} | {s.calls:,.0f} | {s.per_ack:,.0f} "
            f"| {s.startup * 1000:.0f} |"
        )
    return lines


def verdict(summaries: list[Summary]) -> tuple[str, bool]:
    """The headline line, and whether the goal holds (True when K = 4 or K = 1 is missing)."""
    ratio = ratio_of(summaries, 4)
    if ratio is None:
        return "K = 4 against K = 1: not measured (--partitions lacks 1 or 4)", True
    holds = ratio >= GOAL
    word = "holds" if holds else "does NOT hold"
    return f"K = 4 delivers {ratio:.2f}x K = 1: >= {GOAL}x {word}", holds


def reading(summaries: list[Summary], args: argparse.Namespace) -> str:
    """One paragraph on what the numbers say."""
    one, top = summaries[0], summaries[-1]
    c, delay = args.concurrency, args.delay
    text = (
        f"With one partition the worker keeps {c} requests in flight against a receiver that "
        f"answers after {delay * 1000:.0f} ms, so it cannot beat c / L = {c / delay:,.0f} "
        f"deliveries/s; it reaches {one.rate:,.0f} ({one.rate / one.ceiling:.0%}; each delivery "
        f"took {one.latency * 1000:.1f} ms as the worker saw it: the receiver's delay plus the "
        f"request, the signing and the bookkeeping), while this process used "
        f"{one.bench_core:.0%} of one core: "
        + (
            "the receiver's latency, not the worker, is the limit."
            if one.rate >= LATENCY_BOUND * one.ceiling
            else "far from the ceiling, so here the worker (its CPU, or the machine's), not the "
            "receiver's latency, is the limit, and more partitions cannot help much."
        )
    )
    if top.count != one.count:
        ratio = top.rate / one.rate if one.rate else 0.0
        text += (
            f" K = {top.count} partitions deliver {top.rate:,.0f}/s, {ratio:.2f}x, "
            f"{top.rate / top.ceiling:.0%} of their ceiling of {top.ceiling:,.0f}; the pass ends "
            f"with the busiest partition, which had {top.largest_share:.1%} of the events "
            f"(CRC32 of {args.viewers:,} viewer ids mod {top.count}, against an even "
            f"{1 / top.count:.1%}), and each delivery took {top.latency * 1000:.1f} ms as the "
            f"workers saw it, against {one.latency * 1000:.1f} ms at K = {one.count}: with "
            f"{top.count * c} requests in flight instead of {one.count * c}, more of them wait in "
            "the receiver's and the workers' event loops."
        )
        change = top.bench_us / one.bench_us - 1 if one.bench_us else 0.0
        trend = "rises" if change > SAME else "falls" if change < -SAME else "stays about the same"
        text += (
            f" CPU per delivered event {trend} with K: {one.bench_us:,.0f} µs at K = {one.count}, "
            f"{top.bench_us:,.0f} µs at K = {top.count} ({change:+.0%}; redis-server "
            f"{one.redis_us:,.0f} and {top.redis_us:,.0f} µs, Redis calls per 1,000 events "
            f"{one.calls:,.0f} and {top.calls:,.0f}). Every partition reads and decodes the whole "
            "stream and acknowledges the other partitions' entries unread, so the reading is "
            f"done K times over; next to a delivery (the request, its signature, the answer) that "
            f"is small, and a busier worker acknowledges more entries per XACK "
            f"({one.per_ack:,.0f} at K = {one.count}, {top.per_ack:,.0f} at K = {top.count})."
        )
    return text


def sizing(summaries: list[Summary], args: argparse.Namespace) -> list[str]:
    """The figure a reader sizes a deployment with."""
    one, top = summaries[0], summaries[-1]
    c, delay = args.concurrency, args.delay
    cpu = top.bench_us + top.redis_us
    example = 2000.0
    partitions_needed = -(-example * delay // c)
    return [
        "**Sizing**",
        "",
        (
            f"One worker at concurrency c against a receiver of latency L delivers about c / L "
            f"(here {c} / {delay * 1000:.0f} ms = {c / delay:,.0f}/s; measured "
            f"{one.rate:,.0f}/s); CPU per event X = {top.bench_us:,.0f} µs of the "
            f"notifier (measured at K = {top.count}; {one.bench_us:,.0f} µs at "
            f"K = {one.count}) plus {top.redis_us:,.0f} µs of redis-server; so for R "
            "events/s you need K >= R * L / c partitions and R * X / 1e6 cores."
        ),
        (
            f"For example R = {example:,.0f}/s at L = {delay * 1000:.0f} ms and c = {c}: "
            f"K >= {partitions_needed:.0f} (K >= {-(-example * one.latency // c):.0f} with the "
            f"{one.latency * 1000:.1f} ms a delivery took as one worker saw it), and about "
            f"{example * top.bench_us / 1e6:.2f} cores for the notifier "
            f"({example * cpu / 1e6:.2f} with redis-server) at K = {top.count}'s cost per event."
        ),
    ]


def report(
    summaries: list[Summary],
    args: argparse.Namespace,
    command: str,
    redis_version: str,
    loads: tuple[str, str],
) -> str:
    """The Markdown report."""
    hiredis = "hiredis parser" if HIREDIS_AVAILABLE else "pure-Python parser (no hiredis)"
    headline, _ = verdict(summaries)
    mode = "quick" if args.quick else "full"
    lines = [
        (
            f"# Partitions benchmark: {args.events:,} events over {args.viewers:,} viewers, "
            f"K = {', '.join(map(str, args.partitions))}"
        ),
        "",
        f"- machine: {machine()}",
        f"- command: `{command}` ({mode} run)",
        (
            f"- storm-notifier {__version__}; redis-server {redis_version}, its own process "
            f'(`--save "" --appendonly no`); redis-py {version("redis")}, {hiredis}; '
            f"standardwebhooks {version('standardwebhooks')}"
        ),
        (
            f"- receiver: its own process on 127.0.0.1, a bare aiohttp `web.Server` that waits "
            f"{args.delay * 1000:.0f} ms, verifies each request with standardwebhooks and counts "
            "it (`bench.deliver.Counting`)"
        ),
        (
            f"- each pass: a flushed Redis, `Layout(...).ensure()` with K, the events published, "
            f"then K `SinkWorker` + `WebhookSink` tasks (one per `Partition(sink, k, K)`, "
            f"concurrency {args.concurrency} each) until the last group's last XACK; checked: "
            "XPENDING 0 on every group, the partitions' deliveries add up to the events, the "
            "receiver verified each event once (distinct webhook-id), one request each"
        ),
        (
            f"- runs: 1 warm-up ({min(WARM_UP_EVENTS, args.events):,} events) + {args.runs} "
            "timed passes per K, interleaved (the order rotates each round); medians; "
            "CPU: `time.process_time` of the benchmark process (the workers), `INFO cpu` of "
            "redis-server and the receiver's own, each per delivered event"
        ),
        f"- load average (1 min) at start {loads[0]}, at end {loads[1]}",
        "",
        *table(summaries),
        "",
        f"**Headline: {headline}**",
        "",
        reading(summaries, args),
        "",
        *sizing(summaries, args),
        "",
    ]
    return "\n".join(lines)


# --- command line -----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The benchmark's options; ``--quick`` changes the defaults of the sizes."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.partitions",
        description="Time delivery with a sink split over K partitions (bench/README.md)",
    )
    parser.add_argument(
        "--partitions",
        type=int_list("partition counts", high=64),
        default=[1, 2, 4],
        metavar="K,K",
        help="partition counts to compare (default 1,2,4)",
    )
    parser.add_argument(
        "--events", type=positive_int, help=f"events per pass (default {FULL['events']:,})"
    )
    parser.add_argument(
        "--viewers", type=positive_int, help=f"viewers of the events (default {FULL['viewers']:,})"
    )
    parser.add_argument(
        "--concurrency", type=positive_int, default=8, help="deliveries in flight per worker"
    )
    parser.add_argument(
        "--delay", type=float, default=20.0, help="ms the receiver waits before answering"
    )
    parser.add_argument(
        "--runs", type=positive_int, help=f"timed passes per K (default {FULL['runs']})"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=(
            f"small ({QUICK['events']:,} events over {QUICK['viewers']:,} viewers, "
            f"{QUICK['runs']} run): reports the ratio without failing on it"
        ),
    )
    parser.add_argument("--receiver", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.delay > 0:
        parser.error("--delay must be above 0 ms")
    args.delay /= 1000
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the report and write bench/results/partitions.md.

    Exits 1 with one line on stderr if a pass loses or duplicates an event, or (not in
    ``--quick``) if K = 4 delivers less than 2.5x K = 1.
    """
    args = parse_args(argv)
    if args.receiver:
        asyncio.run(serve_receiver(Slow(args.delay)))
        return 0
    configure_logging(fmt="json", level="warning")
    command = " ".join(["python -m bench.partitions", *(sys.argv[1:] if argv is None else argv)])
    started = time.perf_counter()
    try:
        with (
            tempfile.TemporaryDirectory(prefix="bench-partitions-") as directory,
            RedisServer(Path(directory)) as server,
        ):
            print(f"redis-server at {server.url}", file=sys.stderr)

            async def measure() -> tuple[list[Summary], str]:
                start_load = load()
                samples = await run(args, server.url)
                info = Redis.from_url(server.url)
                try:
                    redis_version = str((await info.info("server"))["redis_version"])
                finally:
                    await info.aclose()
                summaries = [
                    Summary.of(samples[k], args.concurrency, args.delay) for k in args.partitions
                ]
                text = report(summaries, args, command, redis_version, (start_load, load()))
                return summaries, text

            summaries, text = asyncio.run(measure())
    except BenchError as exc:
        print(f"bench.partitions: {exc}", file=sys.stderr)
        return 1
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text + "\n")
    print(f"written to {RESULTS} in {time.perf_counter() - started:.0f}s", file=sys.stderr)
    headline, holds = verdict(summaries)
    if not holds and not args.quick:
        print(f"bench.partitions: {headline}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
