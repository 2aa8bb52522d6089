"""End-to-end latency benchmark: a viewer joins the Storm cluster -> its ``viewer.connected``
webhook is received, with ``poll_interval: 1s``, measured from outside the notifier.

Run it with ``make bench`` (or ``python -m bench.latency --help``). It starts three processes,
``notifier simulate`` (2,000 viewers, a tick of 100 ms, joins and leaves at 2% of the audience a
second), its own ``redis-server`` on a free port and ``notifier run`` (all roles; one cluster on
the simulator with a static token, one webhook sink), and in the benchmark process a
``testkit.receivers.WebhookReceiver`` (aiohttp on 127.0.0.1, every request verified with
``standardwebhooks``) and an **observer** of the simulator.

The observer says when each viewer became observable. ``startTime`` cannot: the simulator
draws it up to one tick *before* the tick that adds the viewer, on a virtual clock that falls
behind the wall clock by the ticker's overhead. The audience only changes at a tick, and a
tick moves ``meta.generatedAt`` on, so the observer asks for ``GET /api/cluster/topology`` (a
tiny answer with ``generatedAt``) every ``--probe`` and, when a tick shows, reads the whole
audience in one request (the simulator's page cap is raised for it; the notifier still reads
pages of ``--page-size``). A viewer new in that read became observable after the last request
that still showed the previous tick was sent and before the first that showed the new one was
answered: its moment is the middle of that bracket, its uncertainty half the bracket.

The first poll's events (``data.initial``) are received and skipped; the window of
``--duration`` seconds starts once they have stopped arriving for a second. For every viewer
that became observable in the window, latency = receive time of its ``viewer.connected`` -
the moment it became observable. The window is followed by a drain (two poll intervals + 5 s)
in which the observer and the receiver carry on. The target (issue "e2e latency"): p99 at most
``poll_interval`` + 300 ms; and none lost or duplicated: every viewer that joined in the window
and stayed at least two poll intervals arrives exactly once.

Where the time goes: the event's ``time`` (when the poll that saw the viewer started) and the
first webhook received of any event of that poll split each latency into (1) the wait for the
next poll, (2) that poll's fetch, lookup, detect and commit, the sink worker's read and one
request, and (3) the wait behind the poll's other events (every type is delivered). The
notifier's ``/metrics`` over the window give the mean of each poll phase and of a delivery
request. Joins land on the simulator's tick grid; its ticker runs a little slow (about 1 ms a
tick), so over a minute their phase against the poll sweeps the whole grid several times.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import math
import os
import secrets
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import msgspec
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from bench.poll import BenchError, Simulator, load, machine, simulator, write_report
from notifier.durations import format_duration, parse_duration
from testkit.args import positive_int
from testkit.receivers import Received, WebhookReceiver
from testkit.redis_procs import RedisServer, free_port

if TYPE_CHECKING:
    from collections.abc import Sequence

RESULTS = Path(__file__).parent / "results" / "latency.md"
TARGET = 0.300  # p99 latency minus poll_interval, seconds
MAX_ROWS = 100_000  # the simulator's page cap: the observer reads the audience in one request
UNCERTAIN = 0.025  # joins timed less precisely than +-25 ms are left out of the latency figures
QUIET = 1.0  # the first poll's deliveries are over once none arrived for this long
HEALTH_CHANGES = 0.05  # share of the audience whose health changes a second (the simulator's)


# --- the observer -----------------------------------------------------------------------------


class _Meta(msgspec.Struct):
    generated_at: int = msgspec.field(name="generatedAt")


class _Probe(msgspec.Struct):
    meta: _Meta


class _Row(msgspec.Struct):
    id: str
    start_time: int = msgspec.field(name="startTime")


class _List(msgspec.Struct):
    total: int = msgspec.field(name="totalItems")
    rows: list[_Row] = msgspec.field(name="list")


class _Page(msgspec.Struct):
    data: _List
    meta: _Meta


_probe = msgspec.json.Decoder(_Probe).decode
_page = msgspec.json.Decoder(_Page).decode


@dataclass(slots=True)
class Sighting:
    """One viewer id as the observer saw it; times are the benchmark's ``time.monotonic()``."""

    since: float  # the last request that showed the audience without it was sent after this
    by: float  # the first request that showed it was answered by this
    start_time_ms: int  # its record's startTime (virtual Unix ms)
    present_at: float  # the last moment it was known to be there

    @property
    def seen(self) -> float:
        """The moment it became observable: the middle of the bracket."""
        return (self.since + self.by) / 2

    @property
    def uncertainty(self) -> float:
        """Half the bracket: ``seen`` is right to within this."""
        return (self.by - self.since) / 2


@dataclass(slots=True)
class Observer:
    """Watches the simulator from outside: when each viewer id became observable (and left).

    The audience changes only at a tick, which moves ``generatedAt`` on; between ticks every
    answer shows the same audience. So: a cheap probe every ``interval``, and one read of the
    whole audience each time a probe shows a new tick.
    """

    session: aiohttp.ClientSession
    sim: Simulator
    interval: float
    sightings: dict[str, Sighting] = field(default_factory=dict)
    before: set[str] = field(default_factory=set)  # there at the first read: no join time
    probes: int = 0
    reads: int = 0
    ticks: int = 0
    straddled: int = 0  # a further tick came between a probe and the read after it
    lags: list[float] = field(default_factory=list)  # wall clock - generatedAt per tick, s
    _present: set[str] = field(default_factory=set)
    _generated: int = 0
    _last_same: float = 0.0  # when the last request that showed ``_generated`` was sent

    async def _get(self, path: str, params: dict[str, str]) -> tuple[float, float, bytes]:
        headers = {"Authorization": f"Bearer {self.sim.token}"}
        sent = time.monotonic()
        async with self.session.get(self.sim.url + path, params=params, headers=headers) as r:
            if r.status != 200:
                raise BenchError(f"the observer's GET {path} was answered {r.status}")
            body = await r.read()
        return sent, time.monotonic(), body

    async def _read(self) -> tuple[float, float, _Page]:
        params = {"page": "1", "rowsPerPage": str(MAX_ROWS)}
        sent, answered, body = await self._get("/api/cluster/viewers", params)
        self.reads += 1
        page = _page(body)
        if page.data.total != len(page.data.rows):
            raise BenchError(f"one read gave {len(page.data.rows):,} of {page.data.total:,}")
        return sent, answered, page

    async def start(self) -> None:
        """The first read: the viewers already there."""
        sent, _, page = await self._read()
        self.before = self._present = {row.id for row in page.data.rows}
        self._generated, self._last_same = page.meta.generated_at, sent

    async def run(self, stop: asyncio.Event) -> None:
        """Probe until ``stop`` is set."""
        while not stop.is_set():
            sent, answered, body = await self._get("/api/cluster/topology", {})
            self.probes += 1
            generated = _probe(body).meta.generated_at
            if generated == self._generated:
                self._last_same = sent
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.interval):  # pacing the probes
                        await stop.wait()
                continue
            since, by = self._last_same, answered
            read_sent, read_answered, page = await self._read()
            if page.meta.generated_at != generated:
                self.straddled += 1
                by = read_answered
            self._tick(page, since, by)
            self._last_same = read_sent

    def _tick(self, page: _Page, since: float, by: float) -> None:
        self.ticks += 1
        self.lags.append((by + since) / 2 + wall_offset() - page.meta.generated_at / 1000)
        present = {row.id for row in page.data.rows}
        for row in page.data.rows:
            if row.id not in self._present:
                self.sightings[row.id] = Sighting(since, by, row.start_time, by)
            elif (sighting := self.sightings.get(row.id)) is not None:
                sighting.present_at = by
        for viewer in self._present - present:  # gone: the audience was unchanged until since
            if (sighting := self.sightings.get(viewer)) is not None:
                sighting.present_at = since
        self._present, self._generated = present, page.meta.generated_at

    def close(self, at: float) -> None:
        """The end of observation: the viewers still there were there until ``at``."""
        for viewer in self._present:
            if viewer in self.sightings:
                self.sightings[viewer].present_at = at


def wall_offset() -> float:
    """``time.time() - time.monotonic()``: turns the notifier's wall times into ours."""
    return time.time() - time.monotonic()


# --- the notifier, in its own process ---------------------------------------------------------


def write_config(
    path: Path, *, redis: str, sim: Simulator, hook: str, secret: str, args: argparse.Namespace
) -> None:
    """One cluster on the simulator, one webhook sink, every event type."""
    path.write_text(
        f"redis: {{url: '{redis}'}}\n"
        "clusters:\n"
        "  - name: sim\n"
        f"    base_url: '{sim.url}'\n"
        f"    auth: {{token: '{sim.token}'}}\n"
        f"    poll_interval: {format_duration(args.interval)}\n"
        f"    page_size: {args.page_size}\n"
        "sinks:\n"
        "  - name: hooks\n"
        "    type: webhook\n"
        f"    url: '{hook}'\n"
        f"    secret: '{secret}'\n"
        f"server: {{listen: '127.0.0.1:{args.metrics_port}'}}\n"
        "logging: {format: json, level: info}\n"
    )


async def scrape(session: aiohttp.ClientSession, url: str) -> defaultdict[str, float]:
    """The notifier's poll and delivery figures: histogram sums and counts, poll outcomes."""
    async with session.get(url) as response:
        text = await response.text()
    figures: defaultdict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            detail = sample.labels.get("phase") or sample.labels.get("outcome")
            if sample.name.endswith(("_sum", "_count", "_total")):
                figures[f"{sample.name}/{detail}" if detail else sample.name] += sample.value
    return figures


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def redis_cpu(redis: Redis) -> float:
    """The redis-server's own CPU time (``INFO cpu``)."""
    info: dict[str, float] = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


# --- one run ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Join:
    """A viewer that became observable in the window, and what arrived for it."""

    sighting: Sighting
    receipts: tuple[Received, ...]  # its viewer.connected deliveries
    polled: float | None  # when the poll that saw it started (the event's time), our clock
    poll_first: float | None  # when the first webhook of any event of that poll arrived


@dataclass(frozen=True, slots=True)
class Run:
    """Everything one run measured."""

    joins: list[Join]
    received: list[Received]
    unverified: int
    observer: Observer
    window: float
    cpu: dict[str, float]  # share of one core over the window and the drain
    metrics: dict[str, float]  # the notifier's figures over the window and the drain
    redis_version: str
    exit_status: int


def drain(args: argparse.Namespace) -> float:
    """How long the observer and the receiver carry on after the window."""
    interval: float = args.interval
    return 2 * interval + 5


def simulator_options(args: argparse.Namespace) -> list[str]:
    """The audience: ``--join-rate`` a second, spread over ticks of ``--tick``."""
    return [
        f"--tick={format_duration(args.tick)}",
        f"--join-rate={args.join_rate * args.tick:g}",
        f"--leave-rate={args.join_rate * args.tick:g}",
        f"--health-change-rate={HEALTH_CHANGES * args.tick:g}",
        f"--seed={args.seed}",
    ]


async def settle(receiver: WebhookReceiver, process: asyncio.subprocess.Process) -> None:
    """Wait until the first poll's deliveries (``data.initial``) have stopped arriving."""
    deadline, seen, last = time.monotonic() + 60, 0, None
    while last is None or time.monotonic() - last < QUIET:
        for item in receiver.received[seen:]:
            if item.json.get("data", {}).get("initial"):
                last = item.time
        seen = len(receiver.received)
        if process.returncode is not None:
            raise BenchError(f"notifier run exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise BenchError("the first poll's events did not arrive within 60 s")
        await asyncio.sleep(0.05)  # polling a list for a condition, not pacing the benchmark


async def measure(args: argparse.Namespace) -> Run:  # noqa: PLR0915 - one run, start to end
    """Start everything, observe the window and the drain, stop everything."""
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    with (
        simulator(args.viewers, MAX_ROWS, extra=simulator_options(args)) as sim,
        tempfile.TemporaryDirectory() as work,
        RedisServer(Path(work) / "redis") as server,
    ):
        redis = Redis.from_url(server.url)
        redis_version = str((await redis.info("server"))["redis_version"])
        config, log = Path(work) / "notifier.yaml", Path(work) / "run.log"
        stop = asyncio.Event()
        async with WebhookReceiver(secret) as receiver, aiohttp.ClientSession() as session:
            write_config(
                config, redis=server.url, sim=sim, hook=receiver.url, secret=secret, args=args
            )
            observer = Observer(session, sim, args.probe)
            await observer.start()
            watching = asyncio.create_task(observer.run(stop))
            env = {k: v for k, v in os.environ.items() if k != "NOTIFIER_CONFIG"}
            with log.open("wb") as err:
                process = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "notifier", "run", "--config", str(config),
                    stdout=asyncio.subprocess.DEVNULL, stderr=err, env=env,
                )  # fmt: skip
            metrics_url = f"http://127.0.0.1:{args.metrics_port}/metrics"
            try:
                print("  waiting for the first poll's deliveries", file=sys.stderr)
                await settle(receiver, process)
                start = time.monotonic()
                before = await scrape(session, metrics_url)
                cpu0 = {
                    "simulator": cpu_seconds(sim.process.pid),
                    "notifier": cpu_seconds(process.pid),
                    "redis-server": await redis_cpu(redis),
                    "benchmark": time.process_time(),
                }
                print(f"  window of {args.duration} s", file=sys.stderr)
                end = start + args.duration
                with contextlib.suppress(TimeoutError):  # the run: until the drain is over
                    await asyncio.wait_for(process.wait(), end + drain(args) - time.monotonic())
                if process.returncode is not None:
                    raise BenchError(f"notifier run exited with {process.returncode}: {log}")
                stop.set()
                await watching
                observer.close(time.monotonic())
                elapsed = time.monotonic() - start
                cpu = {
                    "simulator": cpu_seconds(sim.process.pid),
                    "notifier": cpu_seconds(process.pid),
                    "redis-server": await redis_cpu(redis),
                    "benchmark": time.process_time(),
                }
                cpu = {name: (cpu[name] - cpu0[name]) / elapsed for name in cpu}
                after = await scrape(session, metrics_url)
                metrics = {key: value - before[key] for key, value in after.items()}
            finally:
                stop.set()
                watching.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watching
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
                    try:
                        await asyncio.wait_for(process.wait(), 30)
                    except TimeoutError:
                        process.kill()
                        await process.wait()
                await redis.aclose()
        received = list(receiver.received)
        unverified = sum(not attempt.verified for attempt in receiver.attempts)
    return Run(
        joins=joins_in(observer, received, start, end),
        received=received,
        unverified=unverified,
        observer=observer,
        window=args.duration,
        cpu=cpu,
        metrics=metrics,
        redis_version=redis_version,
        exit_status=process.returncode or 0,
    )


def joins_in(observer: Observer, received: list[Received], start: float, end: float) -> list[Join]:
    """The viewers that became observable in ``[start, end]``, each with its deliveries."""
    connected: defaultdict[str, list[Received]] = defaultdict(list)
    first: dict[str, float] = {}  # per poll (the events' time): the first webhook received
    for item in received:
        polled = item.json["time"]
        first[polled] = min(first.get(polled, item.time), item.time)
        if item.json["type"] == "viewer.connected":
            connected[item.json["subject"]].append(item)
    offset = wall_offset()
    joins = []
    for viewer, sighting in observer.sightings.items():
        if start <= sighting.seen <= end:
            receipts = tuple(connected.get(viewer, ()))
            if not receipts:
                joins.append(Join(sighting, receipts, None, None))
                continue
            polled = receipts[0].json["time"]
            at = datetime.fromisoformat(polled).timestamp() - offset
            joins.append(Join(sighting, receipts, at, first[polled]))
    return joins


# --- the report -------------------------------------------------------------------------------


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile of a non-empty sequence."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def stats_row(name: str, values: Sequence[float]) -> str:
    """``| name | count | median | p90 | p99 | max |`` in ms."""
    if not values:
        return f"| {name} | 0 | - | - | - | - |"
    figures = [statistics.median(values), *(percentile(values, q) for q in (0.9, 0.99))]
    cells = " | ".join(f"{v * 1000:,.0f}" for v in [*figures, max(values)])
    return f"| {name} | {len(values):,} | {cells} |"


def report(run: Run, args: argparse.Namespace, loads: tuple[str, str]) -> str:
    """The Markdown report."""
    stay = 2 * args.interval
    timed = [j for j in run.joins if j.receipts and j.sighting.uncertainty <= UNCERTAIN]
    latencies = [j.receipts[0].time - j.sighting.seen for j in timed]
    parts = [
        (j.polled - j.sighting.seen, j.poll_first - j.polled, j.receipts[0].time - j.poll_first)
        for j in timed
        if j.polled is not None and j.poll_first is not None
    ]
    waits, firsts, queued = ([part[i] for part in parts] for i in range(3))
    stayed = [j for j in run.joins if j.sighting.present_at - j.sighting.by >= stay]
    lost = [j for j in stayed if not j.receipts]
    duplicated = [j for j in run.joins if len(j.receipts) > 1]
    short = [j for j in run.joins if j.sighting.present_at - j.sighting.by < stay]
    initial = [j for j in run.joins if any(r.json["data"].get("initial") for r in j.receipts)]
    known = set(run.observer.sightings) | run.observer.before
    unexplained = sum(
        r.json.get("type") == "viewer.connected" and r.json["subject"] not in known
        for r in run.received
    )
    repeated = sum(n - 1 for n in Counter(r.id for r in run.received).values())
    halves = [j.sighting.uncertainty for j in run.joins]
    vague = sum(j.sighting.uncertainty > UNCERTAIN for j in run.joins)
    offset = wall_offset()
    leads = [j.sighting.seen + offset - j.sighting.start_time_ms / 1000 for j in run.joins]
    o, m = run.observer, run.metrics
    lines = [
        "# End-to-end latency: a viewer joins -> its viewer.connected webhook is received",
        "",
        f"- machine: {machine()}",
        (
            f"- storm-notifier {version('storm-notifier')}, redis-server {run.redis_version}, "
            f"redis-py {version('redis')}, standardwebhooks {version('standardwebhooks')}"
        ),
        (
            f"- `notifier simulate --viewers {args.viewers} {' '.join(simulator_options(args))}`"
            f" (joins and leaves {args.join_rate:.1%} of the audience a second); `notifier run`"
            f" (all roles), poll_interval {format_duration(args.interval)}, page_size"
            f" {args.page_size}, one webhook sink (every event type) to an aiohttp receiver in"
            " the benchmark, each request verified with standardwebhooks"
        ),
        (
            f"- a window of {run.window} s after the first poll's deliveries, then a drain of"
            f" {format_duration(drain(args))}; exit status of `notifier run` after"
            f" SIGTERM: {run.exit_status}"
        ),
        (
            f"- observer: {o.probes:,} probes (every {format_duration(args.probe)}), {o.reads:,}"
            f" reads of the whole audience, {o.ticks:,} ticks seen ({o.straddled} with a second"
            f" tick before the read); a join's moment is known to +-{_ms(halves, 0.5)} ms"
            f" (median), +-{_ms(halves, 1.0)} ms (max); {vague} joins timed worse than"
            f" +-{UNCERTAIN * 1000:.0f} ms are left out of the latency figures"
        ),
        f"- load average (1 min) at start {loads[0]}, at end {loads[1]}",
        "- CPU over the window and the drain (share of one core): "
        + ", ".join(f"{name} {share:.0%}" for name, share in run.cpu.items()),
        "",
        "| ms | count | median | p90 | p99 | max |",
        "|---|---:|---:|---:|---:|---:|",
        stats_row("**joined -> webhook received**", latencies),
        stats_row("1. wait: joined -> the poll that saw it started (event `time`)", waits),
        stats_row("2. poll started -> the poll's first webhook received", firsts),
        stats_row("3. the poll's first webhook -> this one (queued behind the others)", queued),
        "",
    ]
    if latencies:
        excess = percentile(latencies, 0.99) - args.interval
        verdict = "met" if excess <= TARGET else "NOT met"
        lines.append(
            f"**p99 - poll_interval: {excess * 1000:+,.0f} ms** (target <= +{TARGET * 1000:.0f}"
            f" ms: {verdict})"
        )
    else:
        lines.append("**p99 - poll_interval: no join was delivered** (target: NOT met)")
    ok = not lost and not duplicated and not repeated
    lines += [
        "",
        (
            f"**events lost / duplicated: {len(lost)} / {len(duplicated)}** (target 0 / 0:"
            f" {'met' if ok else 'NOT met'}): {len(run.joins):,} joins in the window,"
            f" {len(stayed):,} stayed at least two poll intervals and"
            f" {sum(len(j.receipts) == 1 for j in stayed):,} of those arrived exactly once;"
            f" {len(short)} left sooner ({sum(bool(j.receipts) for j in short)} of them arrived)"
        ),
        "",
        (
            f"- checks: {repeated} webhook-ids received twice, {run.unverified} requests not"
            f" verified, {len(initial)} joins delivered as `data.initial`, {unexplained}"
            f" `viewer.connected` for a viewer the observer never saw; {len(run.received):,}"
            " webhooks received in all"
        ),
        (
            f"- the notifier over the window: {_count(m, 'notifier_polls_total/committed')}"
            f" polls committed, {_count(m, 'notifier_polls_total/incomplete')} incomplete;"
            f" a poll cycle {_mean(m, 'notifier_poll_duration_seconds')} ms on average (fetch"
            f" {_mean(m, 'notifier_poll_phase_seconds', 'fetch')}, lookup"
            f" {_mean(m, 'notifier_poll_phase_seconds', 'lookup')}, detect"
            f" {_mean(m, 'notifier_poll_phase_seconds', 'detect')}, commit"
            f" {_mean(m, 'notifier_poll_phase_seconds', 'commit')}); a delivery request"
            f" {_mean(m, 'notifier_delivery_duration_seconds')} ms"
        ),
        (
            f"- `startTime` is no join time: the moment observable minus startTime is"
            f" {_ms(leads, 0.0)} to {_ms(leads, 1.0)} ms (median {_ms(leads, 0.5)}); the"
            f" simulator's virtual clock was {_ms(o.lags[:1], 0.5)} ms behind the wall clock"
            f" at the first tick seen, {_ms(o.lags[-1:], 0.5)} ms at the last"
        ),
    ]
    return "\n".join(lines) + "\n"


def _ms(values: Sequence[float], share: float) -> str:
    """A percentile (0: the minimum) in ms, or "-"."""
    if not values:
        return "-"
    value = min(values) if share == 0 else percentile(values, share)
    return f"{value * 1000:,.0f}"


def _count(metrics: dict[str, float], key: str) -> str:
    return f"{metrics.get(key, 0):,.0f}"


def _mean(metrics: dict[str, float], name: str, phase: str = "") -> str:
    """The mean of a histogram over the window, in ms."""
    suffix = f"/{phase}" if phase else ""
    count = metrics.get(f"{name}_count{suffix}", 0)
    return f"{metrics.get(f'{name}_sum{suffix}', 0) / count * 1000:,.1f}" if count else "-"


# --- the command line -------------------------------------------------------------------------


def seconds(text: str) -> float:
    """A positive duration: ``500ms``, ``1s``, or a bare number of seconds."""
    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be above zero")
    return value


def share(text: str) -> float:
    """A share between 0 (excluded) and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError("must be above 0 and at most 1")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.latency",
        description=(
            "End-to-end latency: a viewer joins the simulated Storm cluster -> its"
            " viewer.connected webhook is received (target: p99 <= poll_interval + 300 ms,"
            " none lost or duplicated)"
        ),
    )
    add = parser.add_argument
    add("--duration", type=positive_int, default=60, help="seconds of joins measured (60)")
    add("--viewers", type=positive_int, default=2000, help="audience of the simulator (2000)")
    add(
        "--join-rate",
        type=share,
        default=0.02,
        help="joins a second as a share of the audience, leaves the same (0.02: ~40/s)",
    )
    add("--tick", type=seconds, default=0.1,
        help="the simulator's tick (100ms): joins land on this grid, so a long tick against"
        " poll_interval puts every join at the same phase of the poll")  # fmt: skip
    add("--interval", type=seconds, default=1.0, help="the notifier's poll_interval (1s)")
    add("--page-size", type=positive_int, default=100, help="the notifier's page_size (100)")
    add("--probe", type=seconds, default=0.005,
        help="how often the observer asks whether a tick happened (5ms)")  # fmt: skip
    add("--seed", type=int, default=0, help="the simulator's seed (0)")
    args = parser.parse_args(argv)
    args.metrics_port = free_port()
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Measure one run, print and write the report."""
    args = parse_args(argv)
    started = time.monotonic()
    before = load()
    run = asyncio.run(measure(args))
    write_report(RESULTS, report(run, args, (before, load())), started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
