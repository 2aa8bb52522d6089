"""Stream-layer benchmark: what stream (audience) events add to a poll, steady and with churn.

Run it with ``make bench`` (or ``python -m bench.streams --help``). It starts
``notifier simulate --viewers N --streams S --tick 0`` (a separate process) and its own
``redis-server`` on a free port, reads the audience once with ``StormClient.poll()`` (that
read is timed too: the fetching side of a cycle). Then two pollers, one with ``detection.streams``
on and one with it off, each on its own keys, apply in interleaved rounds:

- ``steady``: the same poll again (no change);
- ``1% churn``: a new poll each round in which 1% of the viewers are missing and 1% are new
  (those of the round before gone again): joins, misses and, from the third, disconnects.

A row's time is ``Poller.apply()`` (detect, the stream rules, encode, commit). The issue's
target: the stream layer adds at most 10% to a poll cycle (fetch + apply), and its Redis work
per poll stays O(changes) (commands and bytes written, from ``INFO commandstats``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis

from bench.poll import BenchError, cluster_settings, load, machine, simulator, write_report
from notifier.detect.poller import Poller
from notifier.detect.settings import DetectionSettings
from notifier.detect.store import StateStore
from notifier.keys import ClusterKeys
from notifier.lease import Lease
from notifier.storm import StormClient, Viewer, create_session
from testkit.args import positive_int
from testkit.redis_procs import RedisServer

if TYPE_CHECKING:
    from collections.abc import Sequence

    from notifier.storm import Poll

RESULTS = Path(__file__).parent / "results" / "streams.md"
ROWS = 1000
TARGET = 0.10  # added share of a poll cycle
CHURN = 0.01


def churned(poll: Poll, share: float, round_: int) -> Poll:
    """``poll`` with ``share`` of its viewers missing and as many new ones joining (fresh ids),
    other viewers each round: the new ones of a round are gone from the next, so from the
    third poll on every poll also has ``share`` of disconnects."""
    viewers = dict(poll.viewers)
    step = int(1 / share)
    gone = list(viewers)[round_ % step :: step]
    for number, viewer_id in enumerate(gone):
        old = viewers.pop(viewer_id)
        record = json.loads(old.record_bytes())
        record["id"] = new_id = f"{viewer_id}-r{round_}-{number}"
        raw = json.dumps(record, separators=(",", ":")).encode()
        viewers[new_id] = Viewer(new_id, old.health, old.health_grade, raw)
    return dataclasses.replace(poll, viewers=viewers)


async def measure(viewers: int, streams: int, runs: int) -> dict[str, Any]:
    """Median-ready timings of every row, and the Redis work of the churn rows."""
    extra = ["--streams", str(streams)]
    with (
        simulator(viewers, ROWS, timeout=180, extra=extra) as sim,
        tempfile.TemporaryDirectory() as scratch,
        RedisServer(Path(scratch) / "redis") as server,
    ):
        settings = cluster_settings(sim, ROWS, 4)
        redis = Redis.from_url(server.url)
        async with create_session(settings) as session:
            client = StormClient(settings, session)
            first = await client.poll()
            fetches = []
            for _ in range(runs):
                gc.collect()
                started = time.perf_counter()
                fetched = await client.poll()
                fetches.append(time.perf_counter() - started)
            if not first.complete or len(fetched.viewers) != viewers:
                raise BenchError(f"the poll read {len(fetched.viewers):,} of {viewers:,}")
            pollers = {}
            for name, enabled in (("on", True), ("off", False)):
                keys = ClusterKeys("bench", f"streams-{name}")
                detection = DetectionSettings.model_validate(
                    {"confirm_with_lookup": False, "streams": {"enabled": enabled}}
                )
                lease = Lease(redis, keys.lease, keys.fence, "bench", ttl=3600)
                if not await lease.acquire():
                    raise BenchError("no lease")
                store = StateStore(redis, keys, maxlen=20 * viewers)
                poller = Poller(settings, detection, client=client, store=store, lease=lease)
                await poller.apply(first)  # the first poll: not timed
                await poller.apply(first)
                pollers[name] = poller
            times: dict[tuple[str, str], list[float]] = {}
            work: dict[tuple[str, str], tuple[int, int]] = {}
            rows = [("steady", [first] * runs)]  # then churn: it leaves a poll unsteady
            rows.append((f"{CHURN:.0%} churn", [churned(first, CHURN, n) for n in range(runs)]))
            for row, sequence in rows:
                for number, poll in enumerate(sequence):
                    for name in ("on", "off") if number % 2 == 0 else ("off", "on"):
                        gc.collect()
                        await redis.config_resetstat()
                        fresh = dataclasses.replace(poll, started_at=time.time())
                        started = time.perf_counter()
                        await pollers[name].apply(fresh)
                        times.setdefault((row, name), []).append(time.perf_counter() - started)
                        work[(row, name)] = await redis_work(redis)
            if pollers["on"].commits != pollers["off"].commits:
                raise BenchError("the pollers did not commit alike")
            await client.aclose()
        await redis.aclose()
    return {"fetch": statistics.median(fetches), "times": times, "work": work}


async def redis_work(redis: Redis) -> tuple[int, int]:
    """Commands run since the last reset (the commit script counts its calls inside)."""
    stats = await redis.info("commandstats")
    calls = sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")
    net = await redis.info("stats")
    return calls, int(net["total_net_input_bytes"])


def report(
    viewers: int, streams: int, runs: int, results: dict[str, Any], loads: Sequence[str]
) -> str:
    """The Markdown report."""
    fetch = results["fetch"]
    lines = [
        "# Stream-layer benchmark",
        "",
        f"- machine: {machine()}",
        f"- {viewers:,} viewers over {streams:,} streams; {runs} interleaved rounds; medians",
        f"- load average (1 min) at start {loads[0]}, at end {loads[1]}",
        f"- `StormClient.poll()` of the audience: {fetch * 1000:,.0f} ms",
        "",
        (
            "| poll | apply, streams off ms | apply, streams on ms | added ms | added share of"
            " a cycle (fetch + apply) | Redis commands / bytes sent, off | on | target |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    times, work = results["times"], results["work"]
    for row in dict.fromkeys(r for r, _ in times):
        off = statistics.median(times[(row, "off")])
        on = statistics.median(times[(row, "on")])
        share = (on - off) / (fetch + off)
        verdict = "met" if share <= TARGET else "NOT met"
        (off_calls, off_bytes), (on_calls, on_bytes) = work[(row, "off")], work[(row, "on")]
        lines.append(
            f"| {row} | {off * 1000:,.1f} | {on * 1000:,.1f} | {(on - off) * 1000:,.1f} "
            f"| {share:.1%} | {off_calls} / {off_bytes:,} | {on_calls} / {on_bytes:,} "
            f"| <= {TARGET:.0%} ({verdict}) |"
        )
    lines += [
        "",
        (
            "Redis work is of the last poll of each row (commands include the script's own"
            " calls): the stream layer adds the changed audiences' states and the stream events,"
            " nothing per unchanged stream or viewer."
        ),
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.streams", description="What stream events add to a poll"
    )
    parser.add_argument("--viewers", type=positive_int, default=100_000, help="audience")
    parser.add_argument("--streams", type=positive_int, default=1000, help="streams it watches")
    parser.add_argument("--runs", type=positive_int, default=5, help="timed rounds (default 5)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, print and write the report."""
    args = parse_args(argv)
    started = time.monotonic()
    before = load()
    results = asyncio.run(measure(args.viewers, args.streams, args.runs))
    text = report(args.viewers, args.streams, args.runs, results, (before, load()))
    write_report(RESULTS, text, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
