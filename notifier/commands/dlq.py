"""``notifier dlq list|redrive|purge``: inspect, deliver again and delete dead letters.

``redrive`` delivers through the worker's schedule and engine (``sinks.redeliver``); each
dead letter delivered is removed at once, so a redrive that is interrupted sends nothing
twice when run again. One that still fails stays where it is. Its progress is on stderr.

``purge`` without ``--before`` deletes every dead letter of the sink: on a terminal it asks
first; elsewhere it needs ``--yes``. ``list`` and ``purge`` need no secret; ``redrive`` needs
those of the sink it delivers to.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, TextIO

import msgspec

from notifier.commands._common import (
    cluster_names,
    load,
    parse_position,
    positive_int,
    sink_settings,
)
from notifier.commands.progress import progress_for
from notifier.config import Needs
from notifier.errors import ConfigError, NotifierError
from notifier.events import UnreadableEvent
from notifier.keys import ClusterKeys
from notifier.redis_client import connect_redis
from notifier.sinks.base import SinkContext
from notifier.sinks.dead_letters import DeadLetters
from notifier.sinks.redeliver import redeliver
from notifier.sinks.registry import create_sink

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence

    from notifier.commands._common import Commands
    from notifier.config import Settings
    from notifier.events import Event
    from notifier.redis_client import AnyRedis

__all__ = ["dlq_list", "dlq_purge", "dlq_redrive", "main", "register"]

ACTIONS = {
    "list": "print dead letters as JSON lines",
    "redrive": "deliver dead letters again; delivered ones are removed",
    "purge": "delete dead letters",
}


def register(commands: Commands, parents: list[argparse.ArgumentParser]) -> None:
    """``notifier dlq list|redrive|purge --sink S [--cluster C] ...``."""
    parser = commands.add_parser("dlq", parents=parents, help="inspect and redrive dead letters")
    actions = parser.add_subparsers(dest="dlq_command", metavar="ACTION", parser_class=type(parser))
    actions.required = True
    for action, text in ACTIONS.items():
        sub = actions.add_parser(action, parents=parents, help=text)
        sub.add_argument("--sink", required=True, metavar="S")
        sub.add_argument("--cluster", metavar="C", help="one cluster (default: all)")
        if action == "list":
            sub.add_argument(
                "--count", type=positive_int, default=1000, help="at most this many a cluster"
            )
        if action == "redrive":
            sub.add_argument(
                "--id",
                dest="ids",
                action="append",
                default=[],
                metavar="DLQ_ID",
                help="only these dead letters (repeatable)",
            )
        if action == "purge":
            sub.add_argument("--before", metavar="TIME|ID", help="only those older than this")
            sub.add_argument(
                "--yes", action="store_true", help="delete them all without asking (scripts)"
            )
        sub.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    """Run the chosen action."""
    needs = Needs.sink(args.sink) if args.dlq_command == "redrive" else Needs.redis_only()
    settings = load(args, needs)
    if args.dlq_command == "list":
        return asyncio.run(
            dlq_list(
                settings,
                sink_name=args.sink,
                cluster=args.cluster,
                count=args.count,
                out=sys.stdout,
                err=sys.stderr,
            )
        )
    if args.dlq_command == "redrive":
        return asyncio.run(
            dlq_redrive(settings, sink_name=args.sink, cluster=args.cluster, ids=args.ids)
        )
    before = parse_position(args.before) if args.before else None
    confirm = None
    if before is None and not args.yes:
        if not sys.stdin.isatty():
            raise ConfigError(
                "dlq purge: deleting every dead letter needs --yes when not run on a terminal"
                " (or --before TIME|ID to delete the older ones only)"
            )
        confirm = _ask
    return asyncio.run(
        dlq_purge(
            settings,
            sink_name=args.sink,
            cluster=args.cluster,
            before=before,
            out=sys.stdout,
            confirm=confirm,
        )
    )


def _ask(question: str) -> bool:
    """Ask on the terminal; only ``y`` or ``yes`` is a yes."""
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    try:
        answer = sys.stdin.readline()
    except KeyboardInterrupt:
        return False
    return answer.strip().lower() in ("y", "yes")


def _letters(settings: Settings, redis: AnyRedis, sink_name: str, cluster: str) -> DeadLetters:
    keys = ClusterKeys(settings.redis.key_prefix, cluster)
    return DeadLetters(redis, keys, sink_name, maxlen=settings.streams.maxlen)


async def dlq_list(
    settings: Settings,
    *,
    sink_name: str,
    cluster: str | None,
    count: int,
    out: TextIO,
    err: TextIO = sys.stderr,
) -> int:
    """Print dead letters as JSON lines, oldest first; on ``err``, the clusters that have none."""
    sink_settings(settings, sink_name)
    redis = connect_redis(settings.redis)
    try:
        for name in cluster_names(settings, cluster):
            printed = 0
            async for page in _letters(settings, redis, sink_name, name).pages(count=count):
                for dlq_id, letter in page:
                    out.write(msgspec.json.encode(letter.describe(name, dlq_id)).decode() + "\n")
                    printed += 1
            if not printed:
                print(_none(sink_name, name), file=err)
    finally:
        await redis.aclose()
    out.flush()
    return 0


def _none(sink_name: str, cluster: str) -> str:
    return f"no dead letters for sink {sink_name} on cluster {cluster}"


async def dlq_redrive(
    settings: Settings,
    *,
    sink_name: str,
    cluster: str | None,
    ids: Sequence[str] = (),
    err: TextIO = sys.stderr,
) -> int:
    """Deliver dead letters again; the ones delivered leave the dead-letter stream."""
    chosen = sink_settings(settings, sink_name)
    redis = connect_redis(settings.redis)
    sink = create_sink(chosen, SinkContext(redis, settings.redis.key_prefix))
    try:
        stores = {
            n: _letters(settings, redis, sink_name, n) for n in cluster_names(settings, cluster)
        }
        events: list[Event] = []
        for name, store in stores.items():
            async for page in store.pages():
                for dlq_id, letter in page:
                    if ids and dlq_id not in ids:
                        continue
                    try:
                        events.append(letter.event(name, dlq_id))
                    except UnreadableEvent:
                        continue
        unknown = sorted(set(ids) - {event.entry_id for event in events})
        if unknown:
            raise NotifierError(f"redrive: no dead letter with id {', '.join(unknown)}")
        if not events:
            for name in stores:
                print(_none(sink_name, name), file=err)
            return 0

        async def remove(delivered: Sequence[Event]) -> None:
            for event in delivered:
                await stores[event.cluster].remove([event.entry_id])

        progress = progress_for("redrive", len(events), err)
        failures = await redeliver(sink, chosen, events, progress, on_delivered=remove)
    finally:
        await sink.aclose()
        await redis.aclose()
    if failures:
        raise NotifierError(
            f"redrive: {len(failures)} of {len(events)} dead letters failed again"
            f" (first: {failures[0].reason}); they stay in the dead-letter stream"
        )
    return 0


async def dlq_purge(
    settings: Settings,
    *,
    sink_name: str,
    cluster: str | None,
    before: str | None,
    out: TextIO,
    confirm: Callable[[str], bool] | None = None,
) -> int:
    """Delete dead letters (all, or those older than ``before``).

    ``confirm``: asked first, with the number about to go; a no deletes nothing (exit 1).
    """
    sink_settings(settings, sink_name)
    redis = connect_redis(settings.redis)
    removed = 0
    try:
        names = cluster_names(settings, cluster)
        stores = [_letters(settings, redis, sink_name, name) for name in names]
        if confirm is not None:
            total = sum([await store.count() for store in stores])
            if not total:
                out.write(f"purged 0 dead letters of sink {sink_name} (there were none)\n")
                return 0
            where = ("cluster " if len(names) == 1 else "clusters ") + ", ".join(names)
            if not confirm(f"delete all {total} dead letters of sink {sink_name} on {where}?"):
                raise NotifierError("dlq purge: not confirmed; nothing was deleted")
        for store in stores:
            removed += await store.purge(before)
    finally:
        await redis.aclose()
    out.write(f"purged {removed} dead letters of sink {sink_name}\n")
    return 0
