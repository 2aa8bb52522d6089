"""``notifier status``: what the service is doing, read from Redis, as tables or JSON.

Exit status: 0 healthy, 1 when a cluster is not polled recently or a sink is paused (each
problem one line on stderr) or Redis does not answer, 2 for a usage or configuration error.
It contacts only Redis, so it needs no Storm or sink secret.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING

import msgspec
from rich.console import Console

from notifier.commands._common import EXIT_FAILURE, EXIT_OK, load
from notifier.config import Needs
from notifier.redis_client import connect_redis
from notifier.status import read_status
from notifier.status.table import print_status

if TYPE_CHECKING:
    import argparse

    from notifier.commands._common import Commands
    from notifier.config import Settings
    from notifier.status import Status

__all__ = ["main", "register", "status"]

CONNECT_TIMEOUT = 2.0


def register(commands: Commands, parents: list[argparse.ArgumentParser]) -> None:
    """``notifier status [--cluster C] [--json]``."""
    parser = commands.add_parser(
        "status",
        parents=parents,
        help="what the service is doing, read from Redis; exit 1 when not healthy",
    )
    parser.add_argument("--cluster", metavar="C", help="one cluster (default: all)")
    parser.add_argument(
        "--json", action="store_true", help="print the status as JSON (docs/status.md)"
    )
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    """Read once, print, exit with the health."""
    settings = load(args, Needs.redis_only())
    result = asyncio.run(status(settings, cluster=args.cluster))
    if args.json:
        sys.stdout.buffer.write(msgspec.json.encode(result) + b"\n")
        sys.stdout.flush()
    else:
        print_status(result, Console(highlight=False))
    for problem in result.problems:
        print(f"notifier: {problem}", file=sys.stderr)
    return EXIT_OK if result.healthy else EXIT_FAILURE


async def status(settings: Settings, *, cluster: str | None = None) -> Status:
    """The status model, from the configured Redis."""
    redis = connect_redis(settings.redis, connect_timeout=CONNECT_TIMEOUT)
    try:
        return await read_status(redis, settings, cluster=cluster)
    finally:
        await redis.aclose()
