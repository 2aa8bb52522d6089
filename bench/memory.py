"""Memory benchmark: the peak RSS of a real poller process over a big audience.

Run it with ``make bench`` (or ``python -m bench.memory --help``). For each audience size it
starts ``notifier simulate --viewers N --tick 0`` (a separate process), its own
``redis-server`` on a free port (``--save "" --appendonly no``; never the shared one) and
``notifier run --role poller`` against both, waits until ``--polls`` polls are committed (the
first poll of N viewers, then steady ones), and reads the poller's peak resident set
(``VmHWM`` of ``/proc/<pid>/status``), the events in the stream, and how many polls were slow or
fenced from its log. The targets (issue "Big-event speed"): at most 400 MB at 100,000 viewers,
and at most 4 KB per viewer up to 300,000 with every poll written (none fenced).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from redis.asyncio import Redis

from bench.poll import BenchError, load, machine, simulator, write_report
from notifier.keys import ClusterKeys
from testkit.args import int_list, positive_int
from testkit.redis_procs import RedisServer

if TYPE_CHECKING:
    from collections.abc import Sequence

KEYS = ClusterKeys("notifier", "big")
RESULTS = Path(__file__).parent / "results" / "memory.md"
TARGET_100K_MB = 400
TARGET_KB_PER_VIEWER = 4


@dataclass(frozen=True, slots=True)
class Point:
    """One audience size, measured."""

    viewers: int
    polls: int
    events: int
    peak_rss: int  # bytes
    seconds: float
    slow: int
    fenced: int


def peak_rss(pid: int) -> int:
    """``VmHWM`` of a live process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise BenchError(f"no VmHWM for process {pid}")


async def measure(viewers: int, polls: int, within: float) -> Point:
    """One poller process over ``viewers``, until ``polls`` polls are committed."""
    print(f"  {viewers:,} viewers: starting", file=sys.stderr)
    with (
        simulator(viewers, 1000, timeout=120) as sim,
        tempfile.TemporaryDirectory() as work,
        RedisServer(Path(work) / "redis") as server,
    ):
        config = Path(work) / "notifier.yaml"
        config.write_text(
            f"redis: {{url: '{server.url}'}}\n"
            "clusters:\n"
            "  - name: big\n"
            f"    base_url: {sim.url}\n"
            f"    auth: {{token: '{sim.token}'}}\n"
            "    poll_interval: 2s\n"
            "    page_size: 1000\n"
            "    poll_budget: 120s\n"
            "logging: {format: json, level: info}\n"
            "server: {listen: '127.0.0.1:0'}\n"
        )
        log = Path(work) / "run.log"
        env = {k: v for k, v in os.environ.items() if k != "NOTIFIER_CONFIG"}
        with log.open("wb") as err:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "notifier", "run", "--role", "poller",
                "--config", str(config), stdout=asyncio.subprocess.DEVNULL, stderr=err, env=env,
            )  # fmt: skip
        redis = Redis.from_url(server.url)
        started = time.monotonic()
        try:
            while int(await redis.hget(KEYS.meta, "polls") or 0) < polls:
                if process.returncode is not None:
                    raise BenchError(f"the poller exited with {process.returncode}")
                if time.monotonic() - started > within:
                    raise BenchError(f"{viewers:,} viewers: not {polls} polls in {within:.0f}s")
                await asyncio.sleep(0.2)  # polling Redis for a count, not pacing the benchmark
            seconds = time.monotonic() - started
            rss = peak_rss(process.pid)
            events = int(await redis.xlen(KEYS.events))
        finally:
            await redis.aclose()
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                await asyncio.wait_for(process.wait(), 120)
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        names = [line.get("event") for line in lines]
        return Point(
            viewers=viewers,
            polls=polls,
            events=events,
            peak_rss=rss,
            seconds=seconds,
            slow=names.count("poller.poll_slow"),
            fenced=names.count("poller.commit_fenced"),
        )


def report(points: Sequence[Point], loads: tuple[str, str]) -> str:
    """The Markdown report."""
    lines = [
        "# Memory benchmark: a poller process over a big audience",
        "",
        f"- machine: {machine()}",
        (
            "- `notifier run --role poller`, page size 1,000, poll interval 2 s; a first poll of"
            " every viewer, then steady polls; the simulator, Redis and the poller in separate"
            " processes"
        ),
        f"- load average (1 min) at start {loads[0]}, at end {loads[1]}",
        "",
        (
            "| viewers | polls committed | events | seconds | peak RSS MB | per viewer"
            " | growth per added viewer | slow polls said | fenced | target |"
        ),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    previous: Point | None = None
    for p in points:
        per = p.peak_rss / p.viewers
        growth = "-"
        if previous is not None:
            slope = (p.peak_rss - previous.peak_rss) / (p.viewers - previous.viewers)
            growth = f"{slope / 1024:.1f} KB"
        previous = p
        target = f"<= {TARGET_KB_PER_VIEWER} KB/viewer, none fenced"
        met = per <= TARGET_KB_PER_VIEWER * 1024 and not p.fenced
        if p.viewers == 100_000:
            target = f"<= {TARGET_100K_MB} MB"
            met = p.peak_rss <= TARGET_100K_MB * 1024 * 1024 and not p.fenced
        lines.append(
            f"| {p.viewers:,} | {p.polls} | {p.events:,} | {p.seconds:.0f} "
            f"| {p.peak_rss / 2**20:,.0f} | {per / 1024:.1f} KB | {growth} | {p.slow} | {p.fenced} "
            f"| {target} ({'met' if met else 'NOT met'}) |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.memory", description="Peak RSS of a poller over a big audience"
    )
    parser.add_argument(
        "--viewers",
        type=int_list("audience sizes"),
        default=[100_000, 300_000],
        metavar="N,N",
        help="audience sizes (default 100000,300000)",
    )
    parser.add_argument("--polls", type=positive_int, default=4, help="polls to commit (default 4)")
    parser.add_argument(
        "--timeout", type=positive_int, default=600, help="seconds per size at most (default 600)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure every size, print and write the report."""
    args = parse_args(argv)
    started = time.monotonic()
    before = load()
    points = [asyncio.run(measure(n, args.polls, float(args.timeout))) for n in args.viewers]
    text = report(points, (before, load()))
    write_report(RESULTS, text, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
