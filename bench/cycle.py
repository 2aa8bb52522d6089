"""Poll-cycle benchmark: a whole steady poll cycle beside fetching and parsing the same pages.

Run it with ``make bench`` (or ``python -m bench.cycle --help``). For each audience size it
starts ``notifier simulate --viewers N --tick 0 --max-rows-per-page 1000`` (a separate process)
and its own ``redis-server`` on a free port, commits the first poll untimed, then times in
interleaved rounds:

- ``Poller.cycle()``: the real thing in a steady state (fetch and decode every page, detect,
  encode, commit to Redis), as ``notifier run`` does it every ``poll_interval``;
- the baseline of the issue "Big-event speed": aiohttp GET of the same pages (page size 1,000,
  4 in flight) + ``orjson.loads`` of each body.

The target: the cycle at most 1.3x the baseline (aim 1.1x) at 10,000 and 100,000 viewers.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from redis.asyncio import Redis

from bench.poll import (
    AiohttpFetch,
    BenchError,
    PageLoop,
    cluster_settings,
    load,
    machine,
    simulator,
    write_report,
)
from notifier.detect.poller import Poller
from notifier.detect.settings import DetectionSettings
from notifier.detect.store import StateStore
from notifier.keys import ClusterKeys
from notifier.lease import Lease
from notifier.storm import StormClient, create_session
from testkit.args import int_list, positive_int
from testkit.redis_procs import RedisServer

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence, Sized

RESULTS = Path(__file__).parent / "results" / "cycle.md"
ROWS = 1000
CONCURRENCY = 4
TARGET, AIM = 1.3, 1.1
BASELINE = "aiohttp GET + orjson.loads"
CYCLE = "Poller.cycle(), steady"


def orjson_page(body: bytes) -> Sized:
    """The baseline's parse: the whole body, as the issue measured it."""
    parsed: dict[str, Any] = orjson.loads(body)
    rows: list[Any] = parsed["data"]["list"]
    return rows


async def measure(viewers: int, runs: int) -> dict[str, list[float]]:
    """Median-ready timings of both variants at one audience size."""
    print(f"  {viewers:,} viewers", file=sys.stderr)
    times: dict[str, list[float]] = {BASELINE: [], CYCLE: []}
    with (
        simulator(viewers, ROWS, timeout=120) as sim,
        tempfile.TemporaryDirectory() as work,
        RedisServer(Path(work) / "redis") as server,
    ):
        settings = cluster_settings(sim, ROWS, CONCURRENCY)
        redis = Redis.from_url(server.url)
        keys = ClusterKeys("bench", "cycle")
        async with (
            create_session(settings) as session,
            aiohttp.ClientSession() as plain,
        ):
            client = StormClient(settings, session)
            lease = Lease(redis, keys.lease, keys.fence, "bench", ttl=3600)
            poller = Poller(
                settings,
                DetectionSettings(confirm_with_lookup=False),
                client=client,
                store=StateStore(redis, keys, maxlen=10 * viewers),
                lease=lease,
            )
            pages = -(-viewers // ROWS)
            baseline = PageLoop(
                BASELINE, AiohttpFetch(plain, sim, ROWS), pages, CONCURRENCY, orjson_page
            )
            await poller.cycle()  # the first poll: every viewer connects (not timed)
            if poller.tracked != viewers:
                raise BenchError(f"the first poll tracked {poller.tracked:,} of {viewers:,}")
            await baseline.run()  # warm-up
            await poller.cycle()
            for number in range(runs):
                order: list[tuple[str, Callable[[], Awaitable[object]]]] = [
                    (BASELINE, baseline.run),
                    (CYCLE, poller.cycle),
                ]
                for name, run in order if number % 2 == 0 else order[::-1]:
                    gc.collect()
                    started = time.perf_counter()
                    await run()
                    times[name].append(time.perf_counter() - started)
            if poller.commits != runs + 2:
                raise BenchError(f"{poller.commits} commits, expected {runs + 2}")
            await client.aclose()
        await redis.aclose()
    return times


def report(results: dict[int, dict[str, list[float]]], runs: int, loads: tuple[str, str]) -> str:
    """The Markdown report."""
    lines = [
        "# Poll-cycle benchmark",
        "",
        f"- machine: {machine()}",
        (
            f"- {runs} timed rounds per size after a warm-up, the two variants interleaved"
            " (the order alternates); medians"
        ),
        f"- load average (1 min) at start {loads[0]}, at end {loads[1]}",
        "",
        (
            "- ratio: of the medians (the verdict); beside it the ratio of the best passes and"
            " the median of per-round ratios: when the three disagree, something else was using"
            " the CPU (see the load average), so run it again"
        ),
        "",
        f"| viewers | {BASELINE} s | {CYCLE} s | ratio | best / best | per-round median | target |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for viewers, times in results.items():
        base, cycle = statistics.median(times[BASELINE]), statistics.median(times[CYCLE])
        ratio = cycle / base
        best = min(times[CYCLE]) / min(times[BASELINE])
        rounds = statistics.median(
            c / b for c, b in zip(times[CYCLE], times[BASELINE], strict=True)
        )
        verdict = "met" if ratio <= TARGET else "NOT met"
        lines.append(
            f"| {viewers:,} | {base:.3f} | {cycle:.3f} | {ratio:.2f}x | {best:.2f}x "
            f"| {rounds:.2f}x | <= {TARGET}x, aim {AIM}x ({verdict}) |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.cycle", description="A steady poll cycle beside fetch + parse"
    )
    parser.add_argument(
        "--viewers",
        type=int_list("audience sizes"),
        default=[10_000, 100_000],
        metavar="N,N",
        help="audience sizes (default 10000,100000)",
    )
    parser.add_argument("--runs", type=positive_int, default=15, help="timed rounds (default 15)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure every size, print and write the report."""
    args = parse_args(argv)
    started = time.monotonic()
    before = load()
    results = {n: asyncio.run(measure(n, args.runs)) for n in args.viewers}
    text = report(results, args.runs, (before, load()))
    write_report(RESULTS, text, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
