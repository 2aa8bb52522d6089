"""``notifier tail``: follow the event streams, one event per line on stdout.

``--format json`` prints each event as it is in the stream; ``--format text`` one aligned line
for people (``notifier.events.text``), coloured on a terminal. The default is text on a
terminal and JSON otherwise, so ``notifier tail | jq`` gets JSON.
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO, cast

import msgspec
import structlog

from notifier._aio import wait_event
from notifier.commands._common import load, run_until_signal
from notifier.config import Needs
from notifier.errors import ConfigError, NotifierError
from notifier.events import EVENT_FIELD
from notifier.events.text import TextFormat, wants_color
from notifier.keys import ClusterKeys
from notifier.redis_client import REDIS_ERRORS, connect_redis, redis_reason

if TYPE_CHECKING:
    import argparse

    from notifier.commands._common import Commands
    from notifier.config import Settings
    from notifier.redis_client import AnyRedis

__all__ = ["main", "register", "tail"]

log = structlog.get_logger("notifier.tail")
BLOCK_MS = 1000
BATCH = 1000

Entries = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]


def register(commands: Commands, parents: list[argparse.ArgumentParser]) -> None:
    """``notifier tail [--cluster C] [--from ID] [--format text|json]``."""
    parser = commands.add_parser(
        "tail", parents=parents, help="follow the event streams, one event per line"
    )
    parser.add_argument("--cluster", metavar="C", help="one cluster (default: all)")
    parser.add_argument(
        "--from",
        dest="start",
        metavar="ID",
        default="$",
        help="stream entry id to start after: $ (default) new events only, 0 from the start",
    )
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        help="text: one aligned line for people; json: the event (default: text on a terminal)",
    )
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    """Follow until SIGINT/SIGTERM."""
    settings = load(args, Needs.redis_only())
    fmt = args.format or ("text" if sys.stdout.isatty() else "json")
    text = None
    if fmt == "text":
        width = max(len(c.name) for c in settings.clusters)
        text = TextFormat(color=wants_color(sys.stdout, os.environ), cluster_width=width)
    return run_until_signal(
        lambda stop: tail(
            settings, stop, sys.stdout.buffer, cluster=args.cluster, start=args.start, text=text
        )
    )


async def tail(
    settings: Settings,
    stop: asyncio.Event,
    out: BinaryIO,
    *,
    cluster: str | None = None,
    start: str = "$",
    text: TextFormat | None = None,
) -> int:
    """Print events as they arrive (from ``start``: ``$`` new only, ``0`` all, or an entry id),
    as JSON, or as lines for people in ``text`` format."""
    if not _valid_id(start):
        raise ConfigError(f"--from {start!r}: expected an entry id like 1700000000000-0, 0 or $")
    names = [settings.cluster(cluster).name] if cluster else [c.name for c in settings.clusters]
    redis = connect_redis(settings.redis)
    try:
        try:
            await redis.ping()
        except REDIS_ERRORS as exc:
            raise NotifierError(
                f"redis {settings.redis.display_url()}: {redis_reason(exc)}"
            ) from None
        printer = _Printer(out, text)
        followers = [
            asyncio.ensure_future(
                _follow(
                    redis, ClusterKeys(settings.redis.key_prefix, name).events, start, stop, printer
                )
            )
            for name in names
        ]
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait([stopper, *followers], return_when=asyncio.FIRST_COMPLETED)
        for task in [stopper, *followers]:
            task.cancel()
        for result in await asyncio.gather(*followers, return_exceptions=True):
            if isinstance(result, BrokenPipeError):  # `notifier tail | head`
                os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
                return 0
            if isinstance(result, Exception):
                raise result
    finally:
        await redis.aclose()
    return 0


@dataclass
class _Printer:
    out: BinaryIO
    text: TextFormat | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def write(self, bodies: list[bytes]) -> None:
        async with self.lock:
            self.out.writelines(self._line(body) for body in bodies)
            self.out.flush()

    def _line(self, body: bytes) -> bytes:
        if self.text is None:
            return body + b"\n"
        try:
            event = msgspec.json.decode(body)
        except msgspec.DecodeError:  # not an event of ours: shown as it is
            return body + b"\n"
        return self.text.line(event).encode() + b"\n"


async def _follow(
    redis: AnyRedis, stream: str, start: str, stop: asyncio.Event, printer: _Printer
) -> None:
    last = "0-0" if start in ("0", "-") else start
    if last == "$":  # resolve now, so that a reconnect does not skip what came in between
        last = await _last_id(redis, stream)
    log.info("tail.following", stream=stream, after=last)
    failing = False
    while not stop.is_set():
        try:
            reply = cast("Entries", await redis.xread({stream: last}, count=BATCH, block=BLOCK_MS))
        except REDIS_ERRORS as exc:
            if not failing:
                log.warning("tail.redis_unavailable", stream=stream, error=redis_reason(exc))
                failing = True
            await wait_event(stop, 1.0)
            continue
        if failing:
            log.info("tail.redis_recovered", stream=stream)
            failing = False
        for _, entries in reply or ():
            await printer.write([f[EVENT_FIELD] for _, f in entries if EVENT_FIELD in f])
            last = entries[-1][0].decode()


async def _last_id(redis: AnyRedis, stream: str) -> str:
    if not await redis.exists(stream):
        return "0-0"
    info = await redis.xinfo_stream(stream)
    last = info["last-generated-id"]
    return last.decode() if isinstance(last, bytes) else str(last)


def _valid_id(value: str) -> bool:
    if value in ("$", "0", "-"):
        return True
    ms, _, seq = value.partition("-")
    return ms.isdigit() and (not seq or seq.isdigit())
