"""``notifier tail``: follow the event streams, one JSON event per line on stdout."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO, cast

import structlog

from notifier._aio import wait_event
from notifier.commands._common import load, run_until_signal
from notifier.errors import ConfigError, NotifierError
from notifier.events import EVENT_FIELD
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
    """``notifier tail [--cluster C] [--from ID]``."""
    parser = commands.add_parser(
        "tail", parents=parents, help="follow the event streams, one JSON event per line"
    )
    parser.add_argument("--cluster", metavar="C", help="one cluster (default: all)")
    parser.add_argument(
        "--from",
        dest="start",
        metavar="ID",
        default="$",
        help="stream entry id to start after: $ (default) new events only, 0 from the start",
    )
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    """Follow until SIGINT/SIGTERM."""
    settings = load(args)
    return run_until_signal(
        lambda stop: tail(settings, stop, sys.stdout.buffer, cluster=args.cluster, start=args.start)
    )


async def tail(
    settings: Settings,
    stop: asyncio.Event,
    out: BinaryIO,
    *,
    cluster: str | None = None,
    start: str = "$",
) -> int:
    """Print events as they arrive (from ``start``: ``$`` new only, ``0`` all, or an entry id)."""
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
        printer = _Printer(out)
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
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def write(self, bodies: list[bytes]) -> None:
        async with self.lock:
            self.out.writelines(body + b"\n" for body in bodies)
            self.out.flush()


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
