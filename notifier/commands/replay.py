"""``notifier replay``: deliver past events to one sink again, by hand.

The events between ``--from`` and ``--to`` that pass the sink's filters go through the sink
with the worker's schedule and engine (``sinks.redeliver``): per viewer in order, a few quick
retries. Progress goes to stderr (a bar on a terminal, a line every few seconds otherwise,
then a summary). Nothing is dropped: an event that still fails is dead-lettered for the sink,
as a live delivery would be. ``--from`` later than ``--to`` is a usage error.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, TextIO

from notifier.commands._common import cluster_names, load, parse_position, sink_settings
from notifier.commands.progress import progress_for
from notifier.config import Needs
from notifier.errors import ConfigError, NotifierError
from notifier.events import UnreadableEvent, decode_event
from notifier.keys import ClusterKeys
from notifier.redis_client import connect_redis
from notifier.sinks.base import SinkContext
from notifier.sinks.dead_letters import DeadLetters
from notifier.sinks.filter import matches
from notifier.sinks.redeliver import redeliver
from notifier.sinks.registry import create_sink
from notifier.sinks.stream import read_range

if TYPE_CHECKING:
    import argparse

    from notifier.commands._common import Commands
    from notifier.config import Settings
    from notifier.events import Event
    from notifier.redis_client import AnyRedis
    from notifier.sinks.redeliver import Failure

__all__ = ["main", "register", "replay"]


def register(commands: Commands, parents: list[argparse.ArgumentParser]) -> None:
    """``notifier replay --sink S --from TIME|ID [--to TIME|ID] [--cluster C]``."""
    parser = commands.add_parser(
        "replay", parents=parents, help="redeliver past events to one sink"
    )
    parser.add_argument("--sink", required=True, metavar="S")
    parser.add_argument(
        "--from",
        dest="start",
        required=True,
        metavar="TIME|ID",
        help="UTC time (2026-02-05T08:22:40Z), Unix ms, or a stream entry id",
    )
    parser.add_argument("--to", dest="end", metavar="TIME|ID", help="default: the newest event")
    parser.add_argument("--cluster", metavar="C", help="one cluster (default: all)")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    """Replay; exit 1 if any event failed (they are dead-lettered)."""
    start = parse_position(args.start)
    end = parse_position(args.end, end=True) if args.end else "+"
    if end != "+" and _entry_key(start) > _entry_key(end):
        raise ConfigError(f"replay: --from {args.start} is later than --to {args.end}")
    settings = load(args, Needs.sink(args.sink))
    return asyncio.run(
        replay(settings, sink_name=args.sink, start=start, end=end, cluster=args.cluster)
    )


async def replay(
    settings: Settings,
    *,
    sink_name: str,
    start: str,
    end: str = "+",
    cluster: str | None = None,
    err: TextIO = sys.stderr,
) -> int:
    """Redeliver the events between ``start`` and ``end`` (that pass the sink's filters)."""
    chosen = sink_settings(settings, sink_name)
    names = cluster_names(settings, cluster)
    redis = connect_redis(settings.redis)
    sink = create_sink(chosen, SinkContext(redis, settings.redis.key_prefix))
    prefix, maxlen = settings.redis.key_prefix, settings.streams.maxlen
    letters = {
        name: DeadLetters(redis, ClusterKeys(prefix, name), sink_name, maxlen=maxlen)
        for name in names
    }

    async def dead_letter(failure: Failure) -> None:
        await letters[failure.event.cluster].add_failed(
            failure.event, reason=f"replay: {failure.reason}", status=failure.status
        )

    try:
        events: list[Event] = []
        for name in names:
            found = await _events(redis, name, ClusterKeys(prefix, name).events, start, end)
            events += [event for event in found if matches(chosen, event)]
        progress = progress_for("replay", len(events), err)
        failures = await redeliver(sink, chosen, events, progress, on_failed=dead_letter)
    finally:
        await sink.aclose()
        await redis.aclose()
    if failures:
        raise NotifierError(
            f"replay: {len(failures)} of {len(events)} events failed and were dead-lettered"
        )
    return 0


def _entry_key(position: str) -> tuple[int, int]:
    """An entry id (``ms-seq``, or ``ms``) as numbers, to compare two positions."""
    ms, _, seq = position.partition("-")
    return int(ms), int(seq or 0)


async def _events(redis: AnyRedis, cluster: str, key: str, start: str, end: str) -> list[Event]:
    """The readable events of a stream range (entries that are not events are skipped)."""
    events = []
    async for page in read_range(redis, key, start, end):
        for entry_id, fields in page:
            try:
                events.append(decode_event(cluster, entry_id, fields))
            except UnreadableEvent:
                continue
    return events
