"""Poll benchmark: what reading a 100k-viewer audience costs, and how close ``StormClient.poll``
stays to the bare cost of fetching and decoding the JSON.

Run it with ``make bench`` (or ``python -m bench.poll --help``). It starts the Storm simulator as a
separate process (``notifier simulate --tick 0``: the audience never changes, so every variant
reads the same viewers), then times five ways of reading every page, side by side in one run:

1. ``fetch only (aiohttp)``: ``concurrency`` workers GET every page and read the body. The floor.
2. ``fetch + msgspec decode (aiohttp)``: the same, plus ``decode_page`` on every body. The target.
3. ``StormClient.poll()``: the real client, static token, settings as in the tests.
4. ``fetch (httpx AsyncClient) + msgspec decode``: variant 2 with httpx instead of aiohttp.
5. ``fetch (aiohttp) + pydantic per viewer``: variant 2 with a pydantic ``TypeAdapter`` over each
   page's list of viewers instead of msgspec.

Variants 1, 2 and 5 use a session made by ``create_session`` (the client's own pool settings).
The page loops (1, 2, 4, 5) are told the page count up front; the client learns it from page 1,
so it pays one extra serial round-trip. Decoded pages are kept until the pass ends, as a poll keeps
its viewers. After one warm-up pass each, the variants are timed in interleaved rounds (the order
rotates each round), so a slow moment of the machine lands on all of them; ``gc.collect()`` runs
between passes, outside the timed region.

How to read the report: each ratio is a variant's median divided by the median of variant 2 at the
same page size. ``StormClient.poll()`` at about 1.0 means the client adds nothing measurable to
fetching plus decoding; the goal is at most 1.3. The headline also gives the ratio of the best
passes and the median of per-round ratios (client and target timed in the same round); when the
three disagree, the machine was noisy (see the load average) and the run is worth repeating.
Variant 1 shows how much is the transport (and the simulator, a Python server sharing the
machine). Variants 4 and 5 show the costs the client avoids by not using httpx or per-viewer
pydantic. The memory table is one poll under tracemalloc (what the returned ``Poll`` holds, and the
peak while reading); the RSS line is the peak resident growth of the first poll in the process,
before any timing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import io
import json
import os
import platform
import pstats
import queue
import resource
import secrets
import statistics
import subprocess
import sys
import threading
import time
import tracemalloc
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import httpx
import msgspec
from pydantic import BaseModel, ConfigDict, TypeAdapter

from notifier.config import ClusterSettings
from notifier.logs import configure_logging
from notifier.storm import StormClient, create_session
from notifier.storm.decode import decode_page
from testkit.args import int_list, positive_int

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator, Sequence, Sized

    import aiohttp

RESULTS = Path(__file__).resolve().parent / "results" / "poll.md"
VIEWERS_PATH = "/api/cluster/viewers"
BASELINE = "fetch + msgspec decode (aiohttp)"
CLIENT = "StormClient.poll()"
GOAL = 1.3
MB = 1_000_000


class BenchError(RuntimeError):
    """A variant did not read the whole audience, or the simulator did not start."""


# --- the simulator, in its own process --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Simulator:
    """A running ``notifier simulate`` process and how to reach it."""

    url: str
    token: str
    process: subprocess.Popen[str]


@contextlib.contextmanager
def simulator(
    viewers: int, max_rows: int, timeout: float = 60.0, extra: Sequence[str] = ()
) -> Iterator[Simulator]:
    """Start ``notifier simulate`` on a free port (``extra``: more of its options); stop it
    (SIGTERM, then SIGKILL) on exit."""
    token = secrets.token_urlsafe(16)
    command = [
        sys.executable,
        "-m",
        "notifier",
        "simulate",
        "--port",
        "0",
        "--viewers",
        str(viewers),
        "--max-rows-per-page",
        str(max_rows),
        "--tick",
        "0",
        f"--password={secrets.token_urlsafe(16)}",  # "=": a value may begin with "-"
        f"--token={token}",
        *extra,
    ]
    env = {k: v for k, v in os.environ.items() if k != "NOTIFIER_CONFIG"}
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        lines = _drain(process)
        url = _listening_url(lines, process, timeout)
        yield Simulator(url=url, token=token, process=process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _drain(process: subprocess.Popen[str]) -> queue.Queue[str | None]:
    """Read the simulator's stderr on a thread (so a full pipe never blocks it); None at EOF."""
    lines: queue.Queue[str | None] = queue.Queue()
    stream = process.stderr
    if stream is None:
        raise BenchError("the simulator's stderr is not a pipe")

    def pump() -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, name="simulator-stderr", daemon=True).start()
    return lines


def _listening_url(
    lines: queue.Queue[str | None], process: subprocess.Popen[str], timeout: float
) -> str:
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        if line is None:
            raise BenchError(f"the simulator exited ({process.wait()}): {''.join(seen)[-500:]}")
        seen.append(line)
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict) and event.get("event") == "simulator.listening":
                return str(event["url"])
    raise BenchError(f"the simulator did not report simulator.listening within {timeout:.0f}s")


# --- the variants -----------------------------------------------------------------------------


class Variant(Protocol):
    """One way of reading every page once."""

    name: str

    async def run(self) -> tuple[int | None, object]:
        """Read every page; (viewers read, or None if not decoded; what the pass holds)."""
        ...


class ViewerModel(BaseModel):
    """The documented fields of a viewer record (storm-api.md), unknown ones kept."""

    model_config = ConfigDict(extra="allow")

    id: str
    state: str
    harnessType: str  # noqa: N815 - the API's spelling
    applicationId: str  # noqa: N815
    streamKey: str  # noqa: N815
    remoteAddress: str  # noqa: N815
    deviceType: str  # noqa: N815
    osName: str  # noqa: N815
    browserName: str  # noqa: N815
    countryCode: str  # noqa: N815
    countryName: str  # noqa: N815
    startTime: int  # noqa: N815
    duration: int
    inBandwidth: int  # noqa: N815
    outBandwidth: int  # noqa: N815
    inTotalBytes: int  # noqa: N815
    outTotalBytes: int  # noqa: N815
    healthScore: float  # noqa: N815
    healthGrade: str | None = None  # noqa: N815


class _EnvelopeData(msgspec.Struct):
    rows: msgspec.Raw = msgspec.field(name="list")


class _Envelope(msgspec.Struct):
    data: _EnvelopeData


_envelope = msgspec.json.Decoder(_Envelope)
_viewer_list = TypeAdapter(list[ViewerModel])


def msgspec_page(body: bytes) -> Sized:
    """Variants 2 and 4: the client's own decoder."""
    return decode_page(body).viewers


def pydantic_page(body: bytes) -> Sized:
    """Variant 5: msgspec cuts out ``data.list`` (a byte slice), pydantic validates each viewer."""
    return _viewer_list.validate_json(bytes(_envelope.decode(body).data.rows))


class AiohttpFetch:
    """GET one page with an aiohttp session; the body, or BenchError if not 200."""

    def __init__(self, session: aiohttp.ClientSession, sim: Simulator, rows: int) -> None:
        self._session = session
        self._url = sim.url + VIEWERS_PATH
        self._headers = {"Accept": "application/json", "Authorization": f"Bearer {sim.token}"}
        self._rows = str(rows)

    async def __call__(self, number: int) -> bytes:
        params = {"page": str(number), "rowsPerPage": self._rows}
        async with self._session.get(self._url, params=params, headers=self._headers) as response:
            body = await response.read()
            if response.status != 200:
                raise BenchError(f"page {number}: HTTP {response.status}")
            return body


class HttpxFetch:
    """GET one page with an httpx AsyncClient; the body, or BenchError if not 200."""

    def __init__(self, client: httpx.AsyncClient, sim: Simulator, rows: int) -> None:
        self._client = client
        self._url = sim.url + VIEWERS_PATH
        self._headers = {"Accept": "application/json", "Authorization": f"Bearer {sim.token}"}
        self._rows = str(rows)

    async def __call__(self, number: int) -> bytes:
        params = {"page": str(number), "rowsPerPage": self._rows}
        response = await self._client.get(self._url, params=params, headers=self._headers)
        if response.status_code != 200:
            raise BenchError(f"page {number}: HTTP {response.status_code}")
        return response.content


class PageLoop:
    """``concurrency`` workers take page numbers 1..pages in turn; each body is decoded or not."""

    def __init__(
        self,
        name: str,
        fetch: Callable[[int], Awaitable[bytes]],
        pages: int,
        concurrency: int,
        decode: Callable[[bytes], Sized] | None,
    ) -> None:
        self.name = name
        self._fetch = fetch
        self._pages = pages
        self._concurrency = concurrency
        self._decode = decode

    async def run(self) -> tuple[int | None, object]:
        """One pass; the decoded pages are kept until it ends, as a poll keeps its viewers."""
        numbers = iter(range(1, self._pages + 1))
        kept: list[Sized] = []
        received = 0
        fetch, decode = self._fetch, self._decode

        async def worker() -> None:
            nonlocal received
            for number in numbers:
                body = await fetch(number)
                received += len(body)
                if decode is not None:
                    kept.append(decode(body))

        async with asyncio.TaskGroup() as group:
            for _ in range(self._concurrency):
                group.create_task(worker())
        if received == 0:
            raise BenchError(f"{self.name}: no bytes received")
        return (None if decode is None else sum(len(page) for page in kept)), kept


class ClientPoll:
    """Variant 3: ``StormClient.poll()``, which must come back complete."""

    name = CLIENT

    def __init__(self, client: StormClient) -> None:
        self._client = client

    async def run(self) -> tuple[int | None, object]:
        """One poll; BenchError unless it is complete."""
        poll = await self._client.poll()
        if not poll.complete:
            raise BenchError(f"{CLIENT} was incomplete: {poll.error}")
        return len(poll.viewers), poll


def cluster_settings(sim: Simulator, rows: int, concurrency: int) -> ClusterSettings:
    """Built like ``tests/conftest.py::cluster_settings``, with the simulator's static token."""
    return ClusterSettings.model_validate(
        {
            "name": "sim",
            "base_url": sim.url,
            "auth": {"token": sim.token},
            "poll_budget": "60s",
            "timeout": "10s",
            "page_size": rows,
            "concurrency": concurrency,
        }
    )


async def open_variants(
    stack: contextlib.AsyncExitStack, sim: Simulator, rows: int, pages: int, concurrency: int
) -> list[Variant]:
    """The five variants for one page size, each with its own connection pool."""
    settings = cluster_settings(sim, rows, concurrency)

    async def aiohttp_fetch() -> AiohttpFetch:
        session = await stack.enter_async_context(create_session(settings))
        return AiohttpFetch(session, sim, rows)

    client_session = await stack.enter_async_context(create_session(settings))
    client = StormClient(settings, client_session)
    stack.push_async_callback(client.aclose)
    httpx_client = await stack.enter_async_context(httpx.AsyncClient(timeout=10.0, trust_env=False))
    return [
        PageLoop("fetch only (aiohttp)", await aiohttp_fetch(), pages, concurrency, None),
        PageLoop(BASELINE, await aiohttp_fetch(), pages, concurrency, msgspec_page),
        ClientPoll(client),
        PageLoop(
            "fetch (httpx AsyncClient) + msgspec decode",
            HttpxFetch(httpx_client, sim, rows),
            pages,
            concurrency,
            msgspec_page,
        ),
        PageLoop(
            "fetch (aiohttp) + pydantic per viewer",
            await aiohttp_fetch(),
            pages,
            concurrency,
            pydantic_page,
        ),
    ]


# --- measuring --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Timing:
    """The timed passes of one variant at one page size."""

    rows: int
    pages: int
    name: str
    seconds: tuple[float, ...]

    @property
    def median(self) -> float:
        """Median seconds per pass."""
        return statistics.median(self.seconds)

    @property
    def best(self) -> float:
        """Fastest pass."""
        return min(self.seconds)


@dataclass(frozen=True, slots=True)
class Memory:
    """What one poll holds and allocates."""

    rows: int
    viewers: int
    raw_bytes: int
    held: int
    peak: int


async def timed_pass(variant: Variant, viewers: int) -> float:
    """One pass of ``variant``, timed; its result is freed after the clock stops."""
    gc.collect()
    started = time.perf_counter()
    count, held = await variant.run()
    elapsed = time.perf_counter() - started
    if count is not None and count != viewers:
        raise BenchError(f"{variant.name} read {count} viewers, expected {viewers}")
    del held
    return elapsed


async def bench_page_size(
    sim: Simulator, rows: int, viewers: int, concurrency: int, runs: int
) -> list[Timing]:
    """One warm-up and ``runs`` timed passes of every variant, interleaved round by round."""
    pages = -(-viewers // rows)
    async with contextlib.AsyncExitStack() as stack:
        variants = await open_variants(stack, sim, rows, pages, concurrency)
        for variant in variants:
            await timed_pass(variant, viewers)  # warm-up: connections, caches, checks
        seconds: dict[str, list[float]] = {variant.name: [] for variant in variants}
        for round_number in range(runs):
            print(f"  page size {rows}: round {round_number + 1}/{runs}", file=sys.stderr)
            shift = round_number % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                seconds[variant.name].append(await timed_pass(variant, viewers))
    return [Timing(rows, pages, v.name, tuple(seconds[v.name])) for v in variants]


def _max_rss() -> int:
    """Peak resident set size of this process in bytes (Linux reports KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


async def first_poll_rss(sim: Simulator, rows: int, concurrency: int) -> int:
    """Peak RSS growth of the first poll in this process (before anything else big ran)."""
    settings = cluster_settings(sim, rows, concurrency)
    async with create_session(settings) as session:
        client = StormClient(settings, session)
        gc.collect()
        before = _max_rss()
        poll = await client.poll()
        growth = _max_rss() - before
        if not poll.complete:
            raise BenchError(f"{CLIENT} was incomplete: {poll.error}")
        await client.aclose()
    return growth


async def poll_memory(sim: Simulator, rows: int, concurrency: int) -> Memory:
    """One poll under tracemalloc: bytes still held with the ``Poll`` alive, and the peak."""
    settings = cluster_settings(sim, rows, concurrency)
    async with create_session(settings) as session:
        client = StormClient(settings, session)
        await client.poll()  # connections and caches, outside the trace
        gc.collect()
        tracemalloc.start()
        try:
            start = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            poll = await client.poll()
            current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        await client.aclose()
    if not poll.complete:
        raise BenchError(f"{CLIENT} was incomplete: {poll.error}")
    raw = sum(len(viewer.raw) for viewer in poll.viewers.values())
    return Memory(rows, len(poll.viewers), raw, current - start, peak - start)


async def profile_poll(sim: Simulator, rows: int, concurrency: int, top: int) -> str:
    """cProfile of one ``StormClient.poll()`` (after a warm-up poll): top functions by own time."""
    settings = cluster_settings(sim, rows, concurrency)
    profiler = cProfile.Profile()
    async with create_session(settings) as session:
        client = StormClient(settings, session)
        await client.poll()
        gc.collect()
        profiler.enable()
        poll = await client.poll()
        profiler.disable()
        await client.aclose()
    if not poll.complete:
        raise BenchError(f"{CLIENT} was incomplete: {poll.error}")
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats(pstats.SortKey.TIME).print_stats(top)
    stats.sort_stats(pstats.SortKey.CUMULATIVE).print_stats(top)
    return out.getvalue()


# --- the report -------------------------------------------------------------------------------


def write_report(path: Path, text: str, started: float) -> None:
    """Write a report to ``path`` (bench/results/), print it, and say where it went."""
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    print(text)
    print(f"written to {path} in {time.monotonic() - started:.0f}s", file=sys.stderr)


def load() -> str:
    """The 1-minute load average: above ~0.5 on 2 cores, something else shares the machine."""
    return f"{os.getloadavg()[0]:.2f}"


def machine() -> str:
    """Cores, CPU, Python and the libraries that matter here."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.partition(":")[2].strip()
                break
    libraries = ", ".join(
        f"{name} {version(name)}" for name in ("aiohttp", "httpx", "msgspec", "pydantic")
    )
    return (
        f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}, "
        f"{platform.python_implementation()} {platform.python_version()}; {libraries}"
    )


def report(
    timings: Sequence[Timing],
    memory: Sequence[Memory],
    rss: tuple[int, int],
    *,
    viewers: int,
    concurrency: int,
    runs: int,
    loads: tuple[str, str],
) -> str:
    """The Markdown report."""
    base = {t.rows: t for t in timings if t.name == BASELINE}
    lines = [
        f"# Poll benchmark: {viewers:,} viewers, concurrency {concurrency}",
        "",
        f"- machine: {machine()}",
        (
            f"- simulator: a separate process, `notifier simulate --viewers {viewers} "
            "--max-rows-per-page 1000 --tick 0`, static token"
        ),
        (
            f"- runs: 1 warm-up + {runs} timed passes per variant, interleaved (the order "
            f"rotates each round); ratio = median / median of `{BASELINE}` at the same page size"
        ),
        f"- load average (1 min) at start {loads[0]}, at end {loads[1]}",
        "",
        "| page size | pages | variant | median s | best s | viewers/s | ratio to fetch+decode |",
        "|---:|---:|---|---:|---:|---:|---:|",
    ]
    for t in timings:
        ratio = t.median / base[t.rows].median
        lines.append(
            f"| {t.rows:,} | {t.pages:,} | {t.name} | {t.median:.3f} | {t.best:.3f} "
            f"| {viewers / t.median:,.0f} | {ratio:.2f} |"
        )
    lines += ["", "**Headline: StormClient.poll() / (fetch + msgspec decode)**", ""]
    for t in timings:
        if t.name == CLIENT:
            b = base[t.rows]
            median, best = t.median / b.median, t.best / b.best
            paired = statistics.median(c / f for c, f in zip(t.seconds, b.seconds, strict=True))
            verdict = "meets" if median <= GOAL else "MISSES"
            lines.append(
                f"- page size {t.rows:,}: {median:.2f} by median, {best:.2f} by best, "
                f"{paired:.2f} as the median of per-round ratios "
                f"({verdict} the goal of at most {GOAL} by median)"
            )
    lines += [
        "",
        f"## Memory of one {CLIENT} ({viewers:,} viewers)",
        "",
        "| page size | viewers held | raw record bytes | held by the Poll | per viewer | peak |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {m.rows:,} | {m.viewers:,} | {m.raw_bytes / MB:.1f} MB | {m.held / MB:.1f} MB "
        f"| {m.held / max(m.viewers, 1):,.0f} B | {m.peak / MB:.1f} MB |"
        for m in memory
    ]
    lines += [
        "",
        (
            f"Peak RSS growth of the first poll in the process (page size {rss[0]:,}): "
            f"{rss[1] / MB:.1f} MB. Held and peak are traced Python allocations (tracemalloc)."
        ),
        "",
    ]
    return "\n".join(lines)


# --- command line -----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The benchmark's options."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.poll",
        description="Time a full poll of the simulator five ways, side by side (bench/README.md)",
    )
    parser.add_argument("--viewers", type=positive_int, default=100_000, help="audience size")
    parser.add_argument(
        "--page-sizes",
        type=int_list("page sizes", high=1000),
        default=[100, 1000],
        metavar="N,N",
        help="rowsPerPage values to compare (default 100,1000)",
    )
    parser.add_argument("--concurrency", type=positive_int, default=4, help="pages in flight")
    parser.add_argument("--runs", type=positive_int, default=9, help="timed passes per variant")
    parser.add_argument(
        "--profile",
        type=int,
        metavar="PAGE_SIZE",
        help="instead of the benchmark, print a cProfile of one StormClient.poll()",
    )
    parser.add_argument("--top", type=positive_int, default=20, help="rows of the profile")
    return parser.parse_args(argv)


async def run(args: argparse.Namespace, sim: Simulator) -> str:
    """The whole benchmark against a running simulator; the report."""
    sizes: list[int] = args.page_sizes
    start_load = load()
    print(f"simulator at {sim.url}; measuring memory", file=sys.stderr)
    rss = (sizes[0], await first_poll_rss(sim, sizes[0], args.concurrency))
    memory = [await poll_memory(sim, rows, args.concurrency) for rows in sizes]
    timings: list[Timing] = []
    for rows in sizes:
        timings += await bench_page_size(sim, rows, args.viewers, args.concurrency, args.runs)
    return report(
        timings,
        memory,
        rss,
        viewers=args.viewers,
        concurrency=args.concurrency,
        runs=args.runs,
        loads=(start_load, load()),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (or the profile), print the report and write bench/results/poll.md."""
    args = parse_args(argv)
    configure_logging(fmt="json", level="warning")
    started = time.perf_counter()
    with simulator(args.viewers, 1000) as sim:
        if args.profile is not None:
            print(asyncio.run(profile_poll(sim, args.profile, args.concurrency, args.top)))
            return 0
        text = asyncio.run(run(args, sim))
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text + "\n")
    print(f"written to {RESULTS} in {time.perf_counter() - started:.0f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
