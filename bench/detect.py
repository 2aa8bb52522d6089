"""Detection benchmark: what change detection and its Redis work cost per poll of a 100k-viewer
audience, and whether Redis's share follows the changes rather than the audience.

Run it with ``make bench`` (or ``python -m bench.detect --help``). It starts the Storm simulator
as a separate process (``notifier simulate --tick 0``) and reads the audience from it once with
``StormClient.poll()``; it starts its own ``redis-server`` on a free port (``--save ""
--appendonly no``, never the shared one on 6379) and stops it at the end. Smaller audiences
(``--sizes``) are the first n viewers of that poll. For each audience size it times, side by side
in one run:

1. ``first poll``: ``detect()`` of an empty state against every viewer, ``encode_poll`` of one
   ``viewer.connected`` event each, and ``StateStore.commit`` (n upserts and n XADDs in one
   script) on fresh keys.
2. ``steady poll, no change``: the same three steps with the cached state of the audience; the
   commit writes only the meta hash. Chained: each pass starts from the previous pass's state.
3. ``steady poll, 1,500 changes``: 500 viewers leave (their second missed poll: disconnected,
   HDEL), 500 join (connected) and 500 drop in health (their second bad poll: health_dropped),
   i.e. 1,000 upserts, 500 deletes and 1,500 events. Each pass starts from a ``COPY`` of the same
   prepared keys, so every pass writes the same changes.
4. ``reload``: ``StateStore.load()`` of n tracked viewers (a restarted poller, or a stale cache).
5. ``HGETALL viewers``: the bare read of the same hash, for scale; and, once per round at the full
   audience, ``StormClient.poll()`` (page size 1,000), the fetching side of a poll cycle.

Rows 1-3 follow ``Poller.apply`` without the batch lookup of absent viewers (an HTTP call).
After one warm-up pass each, the rows are timed in interleaved rounds (the order rotates each
round); ``gc.collect()`` and ``CONFIG RESETSTAT`` run before each pass, outside the clock.

How to read the report: *detect* is Python time on the poller. The events are encoded by the
commit itself, a chunk at a time while Redis applies the chunk before (as the poller does it), so
*encode* is only the setting up (about 0) and *Redis call* is the whole commit: encoding, packing
the arguments, the transfer and the replies (for a load or HGETALL, that one call).
*Redis blocked* is the CPU time of redis-server's main thread over the pass (``INFO cpu``): how
long every other client of that Redis waits (``INFO commandstats`` would count a script twice:
its own usec includes the commands it calls).
Question (a): rows 2 and 3 at the smallest and the largest size; Redis blocked should barely move
while detect grows with the audience. Question (b): detection's share of a poll cycle is
detect + encode + commit over that plus the median ``StormClient.poll()``. The memory table is the
cached state of the largest audience under tracemalloc: as ``load()`` builds it (records are its
own copies) and as a steady ``detect()`` adds it next to a live poll (records shared with it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import io
import pstats
import random
import re
import statistics
import sys
import tempfile
import time
import tracemalloc
import uuid
from dataclasses import dataclass, field
from importlib.metadata import version
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from redis.asyncio import Redis
from redis.utils import HIREDIS_AVAILABLE

from bench.poll import BenchError, cluster_settings, load, machine, simulator
from notifier.config import DetectionSettings, StreamSettings
from notifier.detect.encoding import PollEvents, encode_poll
from notifier.detect.rules import detect
from notifier.detect.store import CommitOutcome, Snapshot, StateStore
from notifier.keys import ClusterKeys
from notifier.lease import Lease
from notifier.logs import configure_logging
from notifier.storm import StormClient, create_session
from notifier.storm.decode import decode_viewer
from testkit.args import int_list, positive_int
from testkit.redis_procs import RedisServer

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

    from bench.poll import Simulator
    from notifier.storm import Viewer

RESULTS = Path(__file__).resolve().parent / "results" / "detect.md"
PAGE_SIZE = 1000
CONCURRENCY = 4
PREFIX = "bench"
SLOWLOG_KEEP = 100_000  # slowlog-max-len while the benchmark runs
SLOWLOG_OVER_US = 1000  # commands of 1 ms and more are kept
XADD_TARGET = 0.5  # first-poll events/s into Redis at least this share of redis-benchmark XADD
LONGEST_TARGET = 0.050  # seconds: no single Redis command or script longer
SEED = 7
MB = 1_000_000

FIRST = "first poll"
STEADY = "steady poll, no change"
RELOAD = "reload (StateStore.load)"
HGETALL = "HGETALL viewers"
POLL = "StormClient.poll()"
PROFILES = ("first", "steady", "changes", "reload")


def changes_row(changes: int) -> str:
    """The name of row 3 for ``changes`` viewers per kind of change."""
    return f"steady poll, {3 * changes:,} changes"


# --- the polls ----------------------------------------------------------------------------------


def variant(viewer: Viewer, **fields: Any) -> Viewer:
    """The same record with some fields replaced, decoded as the client would."""
    record: dict[str, Any] = msgspec.json.decode(viewer.raw)
    record.update(fields)
    return decode_viewer(msgspec.json.encode(record))


@dataclass(frozen=True, slots=True)
class Polls:
    """What the list returns in each poll of one audience size (id -> viewer, server order).

    ``audience`` is polled twice (everyone connects, then the low scores are confirmed as drops);
    ``churned`` is the audience without the leavers and with the health changers at score 10;
    ``changed`` is ``churned`` plus the joiners: the leavers' second missed poll and the health
    changers' second bad one.
    """

    audience: dict[str, Viewer]
    churned: dict[str, Viewer]
    changed: dict[str, Viewer]


def make_polls(viewers: Mapping[str, Viewer], size: int, changes: int, recover_at: float) -> Polls:
    """The polls of the first ``size`` viewers, with ``changes`` leavers, joiners and drops."""
    audience = dict(islice(viewers.items(), size))
    rng = random.Random(SEED)
    healthy = [i for i, v in audience.items() if v.health is not None and v.health >= recover_at]
    if len(healthy) < 2 * changes or size < 4 * changes:
        raise BenchError(f"{size:,} viewers are too few for {changes:,} changes of each kind")
    picked = rng.sample(healthy, 2 * changes)
    changers, templates = picked[:changes], picked[changes:]
    chosen = set(changers)
    leavers = set(rng.sample([i for i in audience if i not in chosen], changes))
    bad = {i: variant(audience[i], healthScore=10, healthGrade="Very Bad") for i in changers}
    churned = {i: bad.get(i, v) for i, v in audience.items() if i not in leavers}
    joiners = [variant(audience[t], id=f"v_bench{n:09d}") for n, t in enumerate(templates)]
    return Polls(audience, churned, churned | {j.id: j for j in joiners})


# --- Redis --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cluster:
    """The keys of one benchmark cluster, its store and the lease value its commits carry."""

    keys: ClusterKeys
    store: StateStore
    lease: str


async def open_cluster(redis: Redis, name: str) -> Cluster:
    """A store over ``bench:{name}:*`` and its lease, taken for the whole run."""
    keys = ClusterKeys(PREFIX, name)
    store = StateStore(redis, keys, maxlen=StreamSettings().maxlen)
    lease = Lease(redis, keys.lease, keys.fence, "bench", ttl=3600)
    if not await lease.acquire() or lease.value is None:
        raise BenchError(f"could not take the lease of {keys.base}")
    return Cluster(keys, store, lease.value)


async def copy_cluster(redis: Redis, source: Cluster, name: str) -> Cluster:
    """Fresh keys holding the same state (meta and viewers) as ``source``, with a lease."""
    target = ClusterKeys(PREFIX, name)
    await drop(redis, target)
    await redis.copy(source.keys.meta, target.meta)
    await redis.copy(source.keys.viewers, target.viewers)
    return await open_cluster(redis, name)


async def drop(redis: Redis, keys: ClusterKeys) -> None:
    """Delete every key of a benchmark cluster (synchronously: outside the clock, never during)."""
    await redis.delete(keys.meta, keys.viewers, keys.events, keys.lease, keys.fence)


async def redis_cpu(redis: Redis) -> float:
    """The CPU time of redis-server's main thread so far (``INFO cpu``, seconds): the thread
    that runs every command, so while it is busy every other client waits."""
    cpu: dict[str, Any] = await redis.info("cpu")
    return float(cpu["used_cpu_user_main_thread"]) + float(cpu["used_cpu_sys_main_thread"])


async def blocked_seconds(redis: Redis, since: float) -> float:
    """Redis's main thread's CPU time since ``since`` (a ``redis_cpu`` reading).

    ``INFO commandstats`` would count a script's time twice: a script's usec includes the
    commands it calls, and those are counted again under their own names.
    """
    return max(await redis_cpu(redis) - since, 0.0)


async def longest_command(redis: Redis) -> float:
    """The longest single command since the last ``SLOWLOG RESET`` (seconds)."""
    entries = await redis.slowlog_get(SLOWLOG_KEEP)
    return max((int(e["duration"]) for e in entries), default=0) / 1e6


# --- one pass of each row -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    """One timed pass, in seconds; ``blocked`` is None where Redis is not involved."""

    detect: float = 0.0
    encode: float = 0.0
    call: float = 0.0
    blocked: float | None = None
    writes: tuple[int, int, int] | None = None  # upserts, deletes, events
    longest: float | None = None  # the longest single Redis command of the pass

    @property
    def total(self) -> float:
        """Detect + encode + the Redis call (or the poll)."""
        return self.detect + self.encode + self.call


class Size:
    """Every row of one audience size, with the Redis state each row starts from."""

    def __init__(
        self,
        redis: Redis,
        polls: Polls,
        settings: DetectionSettings,
        changes: int,
    ) -> None:
        self.redis = redis
        self.polls = polls
        self.size = len(polls.audience)
        self.changes = changes
        self._settings = settings
        self._base: Cluster | None = None
        self._base_snapshot: Snapshot | None = None
        self._steady: Cluster | None = None
        self._steady_snapshot: Snapshot | None = None

    @property
    def base(self) -> tuple[Cluster, Snapshot]:
        """The keys and cached state just before the poll of row 3."""
        if self._base is None or self._base_snapshot is None:
            raise BenchError("setup() has not run")
        return self._base, self._base_snapshot

    @property
    def steady_snapshot(self) -> Snapshot:
        """The cached state of row 2, as its last pass committed it."""
        if self._steady_snapshot is None:
            raise BenchError("setup() has not run")
        return self._steady_snapshot

    def rows(self) -> dict[str, Callable[[], Awaitable[Sample]]]:
        """Row name -> one timed pass."""
        return {
            FIRST: self.first_poll,
            STEADY: self.steady,
            changes_row(self.changes): self.changed,
            RELOAD: self.reload,
            HGETALL: self.hgetall,
        }

    async def setup(self) -> None:
        """Commit the audience twice and the churned poll (base); chain steady keys from it."""
        base = await open_cluster(self.redis, f"base-{self.size}")  # a fresh server: no keys
        snapshot = await base.store.load()
        for seen in (self.polls.audience, self.polls.audience, self.polls.churned):
            snapshot, _ = await self.cycle(base, snapshot, seen)
        self._base, self._base_snapshot = base, snapshot
        steady = await copy_cluster(self.redis, base, f"steady-{self.size}")
        self._steady_snapshot, _ = await self.cycle(steady, snapshot, self.polls.changed)
        self._steady = steady

    async def cycle(
        self, cluster: Cluster, snapshot: Snapshot, seen: Mapping[str, Viewer]
    ) -> tuple[Snapshot, Sample]:
        """``Poller.apply`` without lookups, timed step by step; the state it commits."""
        polled_at = int(time.time() * 1000)
        gc.collect()
        await self.redis.config_resetstat()
        await self.redis.slowlog_reset()
        mark = await redis_cpu(self.redis)
        started = time.perf_counter()
        detection = detect(
            snapshot.tracked, seen, confirmed={}, polled_at=polled_at, settings=self._settings
        )
        detected = time.perf_counter()
        events = PollEvents(  # encoded by the commit, chunk by chunk, as the poller does it
            detection.emissions,
            cluster=cluster.keys.cluster,
            epoch=snapshot.epoch,
            after=snapshot.sequence,
            time_ms=polled_at,
        )
        encoded = time.perf_counter()
        outcome, generation = await cluster.store.commit(
            snapshot, detection, events, lease=cluster.lease, polled_at=polled_at
        )
        committed = time.perf_counter()
        blocked = await blocked_seconds(self.redis, mark)
        longest = await longest_command(self.redis)
        if outcome is not CommitOutcome.COMMITTED:
            raise BenchError(f"{cluster.keys.base}: the commit was {outcome.value}")
        after = Snapshot(
            generation=generation,
            sequence=snapshot.sequence + len(events),
            epoch=snapshot.epoch,
            tracked=detection.state,
        )
        writes = (len(detection.upserts), len(detection.deletes), len(events))
        sample = Sample(
            detect=detected - started,
            encode=encoded - detected,
            call=committed - encoded,
            blocked=blocked,
            writes=writes,
            longest=longest,
        )
        return after, sample

    async def first_poll(self) -> Sample:
        """Row 1: everyone connects, on fresh keys (the empty load is outside the clock)."""
        cluster = await open_cluster(self.redis, f"first-{self.size}")
        try:
            snapshot = await cluster.store.load()
            if snapshot.tracked:
                raise BenchError(f"{cluster.keys.base} was not empty")
            _, sample = await self.cycle(cluster, snapshot, self.polls.audience)
        finally:
            await drop(self.redis, cluster.keys)
        return self._expect(sample, (self.size, 0, self.size))

    async def steady(self) -> Sample:
        """Row 2: the same audience again, from the state the previous pass committed."""
        if self._steady is None or self._steady_snapshot is None:
            raise BenchError("setup() has not run")
        self._steady_snapshot, sample = await self.cycle(
            self._steady, self._steady_snapshot, self.polls.changed
        )
        return self._expect(sample, (0, 0, 0))

    async def changed(self) -> Sample:
        """Row 3: the leavers' second miss, the joiners, the confirmed drops; on a copy of base."""
        base, snapshot = self.base
        cluster = await copy_cluster(self.redis, base, f"round-{self.size}")
        try:
            _, sample = await self.cycle(cluster, snapshot, self.polls.changed)
        finally:
            await drop(self.redis, cluster.keys)
        n = self.changes
        return self._expect(sample, (2 * n, n, 3 * n))

    async def reload(self) -> Sample:
        """Row 4: ``StateStore.load()`` of the base keys."""
        base, _ = self.base
        gc.collect()
        await self.redis.config_resetstat()
        await self.redis.slowlog_reset()
        mark = await redis_cpu(self.redis)
        started = time.perf_counter()
        snapshot = await base.store.load()
        elapsed = time.perf_counter() - started
        blocked = await blocked_seconds(self.redis, mark)
        longest = await longest_command(self.redis)
        if len(snapshot.tracked) != self.size:
            raise BenchError(f"loaded {len(snapshot.tracked):,} viewers, expected {self.size:,}")
        return Sample(call=elapsed, blocked=blocked, longest=longest)

    async def hgetall(self) -> Sample:
        """Row 5: the bare HGETALL of the base keys' viewers hash."""
        base, _ = self.base
        gc.collect()
        await self.redis.config_resetstat()
        mark = await redis_cpu(self.redis)
        started = time.perf_counter()
        entries = await self.redis.hgetall(base.keys.viewers)
        elapsed = time.perf_counter() - started
        blocked = await blocked_seconds(self.redis, mark)
        if len(entries) != self.size:
            raise BenchError(f"HGETALL returned {len(entries):,} fields, expected {self.size:,}")
        return Sample(call=elapsed, blocked=blocked)

    def _expect(self, sample: Sample, writes: tuple[int, int, int]) -> Sample:
        if sample.writes != writes:
            raise BenchError(
                f"{self.size:,} viewers: wrote {sample.writes} (upserts, deletes, events), "
                f"expected {writes}"
            )
        return sample


async def timed_poll(client: StormClient, viewers: int) -> Sample:
    """One ``StormClient.poll()``, which must come back complete with every viewer."""
    gc.collect()
    started = time.perf_counter()
    poll = await client.poll()
    elapsed = time.perf_counter() - started
    if not poll.complete or len(poll.viewers) != viewers:
        raise BenchError(f"{POLL}: complete={poll.complete}, {len(poll.viewers):,} viewers")
    return Sample(call=elapsed)


# --- memory -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Memory:
    """The cached state of one audience size, in bytes."""

    size: int
    loaded: int  # held by Snapshot.tracked after StateStore.load()
    load_peak: int  # traced peak while loading (the reply, decoded)
    records: int  # raw record bytes inside it
    detected: int  # what a steady detect()'s state adds next to a live poll
    redis: int  # MEMORY USAGE of the viewers hash


async def state_memory(size: Size) -> Memory:
    """tracemalloc of the cached state, built both ways, and Redis's size of the hash."""
    base, _ = size.base
    snapshot = size.steady_snapshot
    gc.collect()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        loaded = await base.store.load()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    records = sum(len(track.record) for track in loaded.tracked.values())
    del loaded
    gc.collect()
    tracemalloc.start()
    try:
        start_detect = tracemalloc.get_traced_memory()[0]
        detection = detect(
            snapshot.tracked, size.polls.changed, polled_at=1, settings=DetectionSettings()
        )
        state = detection.state
        del detection
        added = tracemalloc.get_traced_memory()[0] - start_detect
    finally:
        tracemalloc.stop()
    if len(state) != size.size:
        raise BenchError(f"the steady state holds {len(state):,} viewers, expected {size.size:,}")
    usage = await size.redis.memory_usage(base.keys.viewers, samples=0)
    return Memory(size.size, current - start, peak - start, records, added, int(usage or 0))


# --- the run ------------------------------------------------------------------------------------


@dataclass(slots=True)
class Results:
    """Every timed pass by (audience size, row), and what the report needs besides."""

    samples: dict[tuple[int, str], list[Sample]] = field(default_factory=dict)
    memory: Memory | None = None
    redis_version: str = ""
    xadd_rates: list[float] = field(default_factory=list)  # redis-benchmark XADD, events/s
    event_bytes: int = 0

    def add(self, size: int, row: str, sample: Sample) -> None:
        """Record one pass."""
        self.samples.setdefault((size, row), []).append(sample)


async def prepare(
    stack: contextlib.AsyncExitStack, redis: Redis, sim: Simulator, args: argparse.Namespace
) -> tuple[StormClient, list[Size]]:
    """Read the audience once; build the polls and the Redis state of every size."""
    settings = cluster_settings(sim, PAGE_SIZE, CONCURRENCY)
    session = await stack.enter_async_context(create_session(settings))
    client = StormClient(settings, session)
    stack.push_async_callback(client.aclose)
    detection = DetectionSettings(confirm_with_lookup=False)
    poll = await client.poll()
    if not poll.complete or len(poll.viewers) != args.viewers:
        raise BenchError(f"{POLL}: complete={poll.complete}, {len(poll.viewers):,} viewers")
    sizes = []
    for n in args.sizes:
        print(f"  preparing {n:,} viewers", file=sys.stderr)
        polls = make_polls(poll.viewers, n, args.changes, detection.health.recover_at)
        size = Size(redis, polls, detection, args.changes)
        await size.setup()
        sizes.append(size)
    return client, sizes


async def run(args: argparse.Namespace, sim: Simulator, redis: Redis) -> Results:
    """Warm up every row once, then time ``args.runs`` interleaved rounds."""
    async with contextlib.AsyncExitStack() as stack:
        await redis.config_set("slowlog-log-slower-than", SLOWLOG_OVER_US)
        await redis.config_set("slowlog-max-len", SLOWLOG_KEEP)
        client, sizes = await prepare(stack, redis, sim, args)
        results = Results(redis_version=str((await redis.info("server"))["redis_version"]))
        passes: list[tuple[int, str, Callable[[], Awaitable[Sample]]]] = [
            (size.size, name, row) for size in sizes for name, row in size.rows().items()
        ]

        async def poll_pass() -> Sample:
            return await timed_poll(client, args.viewers)

        passes.append((args.viewers, POLL, poll_pass))
        for _, _, row in passes:
            await row()  # warm-up: scripts loaded, connections open, caches filled
        for number in range(args.runs):
            print(f"  round {number + 1}/{args.runs}", file=sys.stderr)
            shift = number % len(passes)
            for size_n, name, row in passes[shift:] + passes[:shift]:
                results.add(size_n, name, await row())
        results.memory = await state_memory(sizes[-1])
        results.event_bytes, results.xadd_rates = await xadd_baseline(redis, sizes[-1], args.runs)
    return results


async def xadd_baseline(redis: Redis, size: Size, runs: int) -> tuple[int, list[float]]:
    """``redis-benchmark -P 32`` XADD of events of the first poll's median size, on this same
    server: what Redis itself takes in, with nothing of ours in the way."""
    snapshot = Snapshot(generation=0, sequence=0, epoch=str(uuid.uuid4()), tracked={})
    detection = detect({}, size.polls.audience, polled_at=0, settings=DetectionSettings())
    encoded = encode_poll(
        detection.emissions, cluster="c", epoch=snapshot.epoch, after=0, time_ms=0
    )
    bodies = sorted(len(e.body) for e in encoded)
    body = bodies[len(bodies) // 2]
    port = str(redis.connection_pool.connection_kwargs["port"])
    rates = []
    for _ in range(runs):
        process = await asyncio.create_subprocess_exec(
            "redis-benchmark", "-p", port, "-P", "32", "-n", str(size.size), "-q",
            "XADD", "bench:xadd", "*", "type", "viewer.connected", "id", "0" * 36,
            "event", "x" * body,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 300)
        found = re.findall(r"([\d.]+) requests per second", out.decode())
        if process.returncode or not found:
            raise BenchError(f"redis-benchmark said: {out[-200:]!r} {err[-200:]!r}")
        rates.append(float(found[-1]))
        await redis.delete("bench:xadd")
    return body, rates


async def profile(args: argparse.Namespace, sim: Simulator, redis: Redis) -> str:
    """cProfile of one pass of one row at the largest size (after a warm-up pass)."""
    args.sizes = args.sizes[-1:]
    async with contextlib.AsyncExitStack() as stack:
        _, sizes = await prepare(stack, redis, sim, args)
        size = sizes[0]
        row = {
            "first": size.first_poll,
            "steady": size.steady,
            "changes": size.changed,
            "reload": size.reload,
        }[args.profile]
        await row()
        profiler = cProfile.Profile()
        profiler.enable()
        await row()
        profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats(pstats.SortKey.TIME).print_stats(args.top)
    stats.sort_stats(pstats.SortKey.CUMULATIVE).print_stats(args.top)
    return out.getvalue()


# --- the report ---------------------------------------------------------------------------------


def ms(seconds: float | None) -> str:
    """Milliseconds with three significant digits or so; a dash for "not applicable"."""
    if seconds is None:
        return "-"
    value = seconds * 1000
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def median(samples: Sequence[Sample], part: str) -> float | None:
    """The median of one part of the samples (None if Redis is not involved)."""
    values: list[float | None] = [getattr(s, part) for s in samples]
    numbers = [v for v in values if v is not None]
    return statistics.median(numbers) if len(numbers) == len(values) else None


def big_event(results: Results, large: int) -> list[str]:
    """Section (c): the first poll of the largest audience against what Redis takes in."""
    firsts = results.samples.get((large, FIRST), [])
    if not firsts or not results.xadd_rates:
        return []
    rate = large / statistics.median(s.total for s in firsts)
    baseline = statistics.median(results.xadd_rates)
    ratio = rate / baseline
    longest = max(s.longest or 0.0 for rows in results.samples.values() for s in rows)
    low, high = min(results.xadd_rates), max(results.xadd_rates)
    return [
        "",
        f"## A big event: the first poll of {large:,} viewers into Redis",
        "",
        "| figure | baseline, same run | storm-notifier | ratio | target |",
        "|---|---|---:|---:|---|",
        (
            f"| events/s into Redis (detect + encode + commit) | `redis-benchmark -P 32` XADD of"
            f" {results.event_bytes:,}-byte events: {baseline:,.0f}/s ({low:,.0f}-{high:,.0f})"
            f" | {rate:,.0f}/s | {ratio:.2f}x | >= {XADD_TARGET}x"
            f" ({'met' if ratio >= XADD_TARGET else 'NOT met'}) |"
        ),
        (
            f"| longest single Redis command, every row (SLOWLOG) | - | {ms(longest)} ms | - "
            f"| <= {ms(LONGEST_TARGET)} ms ({'met' if longest <= LONGEST_TARGET else 'NOT met'}) |"
        ),
    ]


def report(results: Results, args: argparse.Namespace, loads: tuple[str, str]) -> str:
    """The Markdown report."""
    sizes: list[int] = args.sizes
    changes = changes_row(args.changes)
    hiredis = "hiredis parser" if HIREDIS_AVAILABLE else "pure-Python parser (no hiredis)"
    lines = [
        f"# Detection benchmark: {args.viewers:,} viewers",
        "",
        f"- machine: {machine()}",
        (
            f'- redis-server {results.redis_version}, its own process (`--save "" --appendonly '
            f"no`); redis-py {version('redis')}, {hiredis}"
        ),
        (
            f"- audience: one `{POLL}` of `notifier simulate --viewers {args.viewers} --tick 0`; "
            "smaller sizes are its first n viewers"
        ),
        (
            f"- `{changes}`: {args.changes:,} leave (second missed poll: disconnected + HDEL), "
            f"{args.changes:,} join, {args.changes:,} health drops confirmed (second bad poll): "
            f"{2 * args.changes:,} upserts, {args.changes:,} deletes, {3 * args.changes:,} events"
        ),
        (
            f"- runs: 1 warm-up + {args.runs} timed passes per row, interleaved (the order "
            "rotates each round); gc.collect() and CONFIG RESETSTAT before each, outside the clock"
        ),
        f"- load average (1 min) at start {loads[0]}, at end {loads[1]}",
        "",
        (
            "| audience | row | detect ms | encode ms | Redis call ms | Redis blocked ms "
            "| longest command ms | total median ms | total best ms | upserts / deletes / events |"
        ),
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (size, name), samples in results.samples.items():
        cycle = samples[0].writes is not None
        writes = samples[0].writes
        lines.append(
            f"| {size:,} | {name} "
            f"| {ms(median(samples, 'detect')) if cycle else '-'} "
            f"| {ms(median(samples, 'encode')) if cycle else '-'} "
            f"| {ms(median(samples, 'call'))} | {ms(median(samples, 'blocked'))} "
            f"| {ms(max(s.longest for s in samples if s.longest is not None)) if cycle else '-'} "
            f"| {ms(median(samples, 'total'))} | {ms(min(s.total for s in samples))} "
            f"| {' / '.join(f'{w:,}' for w in writes) if writes else '-'} |"
        )
    small, large = min(sizes), max(sizes)
    lines += [
        "",
        f"## (a) Steady-state Redis time: {small:,} vs {large:,} viewers",
        "",
        (
            f"| row | Redis blocked ms ({small:,} → {large:,}) | ratio | Redis call ms | ratio "
            f"| detect ms | ratio |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    verdicts = []
    for name in (STEADY, changes):
        if small == large:
            break
        a, b = results.samples[(small, name)], results.samples[(large, name)]
        cells = []
        ratios = {}
        for part in ("blocked", "call", "detect"):
            x, y = median(a, part) or 0.0, median(b, part) or 0.0
            ratios[part] = y / x if x else float("nan")
            cells += [f"{ms(x)} → {ms(y)}", f"{ratios[part]:.2f}"]
        lines.append(f"| {name} | {' | '.join(cells)} |")
        verdicts.append(
            f"- {name}: x{large / small:.0f} the audience gives x{ratios['blocked']:.2f} the "
            f"Redis blocked time ({'independent of' if ratios['blocked'] <= 2 else 'GROWS with'} "
            f"the audience) and x{ratios['detect']:.1f} the detect time"
        )
    lines += ["", *verdicts, *big_event(results, large)]
    polls = results.samples.get((args.viewers, POLL), [])
    if polls and large == args.viewers:
        fetch = statistics.median(s.total for s in polls)
        lines += [
            "",
            f"## (b) Detection vs fetching in one poll cycle ({large:,} viewers)",
            "",
            (
                f"| cycle | {POLL} ms | detect + encode + commit ms | Redis blocked ms "
                "| detection's share of the cycle |"
            ),
            "|---|---:|---:|---:|---:|",
        ]
        for name in (FIRST, STEADY, changes):
            samples = results.samples[(large, name)]
            spent = statistics.median(s.total for s in samples)
            lines.append(
                f"| {name} | {ms(fetch)} | {ms(spent)} | {ms(median(samples, 'blocked'))} "
                f"| {spent / (fetch + spent):.0%} |"
            )
    memory = results.memory
    if memory is not None:
        n = max(memory.size, 1)
        lines += [
            "",
            f"## Memory of the cached state ({memory.size:,} viewers)",
            "",
            "| what | bytes | per viewer |",
            "|---|---:|---:|",
            (
                f"| `Snapshot.tracked` after `StateStore.load()` (records are its own copies) "
                f"| {memory.loaded / MB:.1f} MB | {memory.loaded / n:,.0f} B |"
            ),
            (
                f"| of which raw record bytes | {memory.records / MB:.1f} MB "
                f"| {memory.records / n:,.0f} B |"
            ),
            f"| traced peak while loading | {memory.load_peak / MB:.1f} MB | - |",
            (
                f"| what a steady `detect()` state adds next to its poll (records shared) "
                f"| {memory.detected / MB:.1f} MB | {memory.detected / n:,.0f} B |"
            ),
            (
                f"| Redis: `MEMORY USAGE` of the viewers hash | {memory.redis / MB:.1f} MB "
                f"| {memory.redis / n:,.0f} B |"
            ),
        ]
    lines.append("")
    return "\n".join(lines)


# --- command line -------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The benchmark's options."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.detect",
        description="Time detection and its Redis work per poll, side by side (bench/README.md)",
    )
    parser.add_argument("--viewers", type=positive_int, default=100_000, help="audience polled")
    parser.add_argument(
        "--sizes",
        type=int_list("audience sizes"),
        default=[10_000, 100_000],
        metavar="N,N",
        help="audience sizes to compare, each at most --viewers (default 10000,100000)",
    )
    parser.add_argument(
        "--changes", type=positive_int, default=500, help="leavers, joiners and drops (each)"
    )
    parser.add_argument("--runs", type=positive_int, default=7, help="timed passes per row")
    parser.add_argument(
        "--profile",
        choices=PROFILES,
        help="instead of the benchmark, print a cProfile of one pass of a row at the largest size",
    )
    parser.add_argument("--top", type=positive_int, default=20, help="rows of the profile")
    args = parser.parse_args(argv)
    if args.sizes[-1] > args.viewers:
        parser.error(f"--sizes cannot exceed --viewers ({args.viewers})")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (or a profile), print the report and write bench/results/detect.md."""
    args = parse_args(argv)
    configure_logging(fmt="json", level="warning")
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="bench-detect-") as directory,
        RedisServer(Path(directory)) as server,
        simulator(args.viewers, PAGE_SIZE) as sim,
    ):
        print(f"redis-server at {server.url}, simulator at {sim.url}", file=sys.stderr)

        async def measure() -> str:
            redis = Redis.from_url(server.url, socket_timeout=120)  # tracemalloc is slow
            try:
                if args.profile is not None:
                    return await profile(args, sim, redis)
                start_load = load()
                results = await run(args, sim, redis)
                return report(results, args, (start_load, load()))
            finally:
                await redis.aclose()

        text = asyncio.run(measure())
    print(text)
    if args.profile is None:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text + "\n")
        print(f"written to {RESULTS} in {time.perf_counter() - started:.0f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
