"""``notifier snapshot``: one poll of one cluster, printed as JSON lines; writes nothing."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import TYPE_CHECKING, BinaryIO, TextIO

from notifier.commands._common import load
from notifier.config import Needs
from notifier.errors import ConfigError
from notifier.storm import StormClient, create_session

if TYPE_CHECKING:
    import argparse

    from notifier.commands._common import Commands
    from notifier.config import Settings
    from notifier.storm import Poll
    from notifier.storm.settings import ClusterSettings

__all__ = ["main", "pick_cluster", "register", "snapshot", "verdict"]


def pick_cluster(settings: Settings, name: str | None) -> ClusterSettings:
    """The cluster named ``name``, or the only one configured."""
    if name is not None:
        return settings.cluster(name)
    if len(settings.clusters) > 1:
        names = ", ".join(c.name for c in settings.clusters)
        raise ConfigError(f"several clusters are configured ({names}): pick one with --cluster")
    return settings.clusters[0]


async def snapshot(settings: Settings, cluster: str | None, out: BinaryIO, err: TextIO) -> int:
    """Poll once, print each viewer record on ``out`` and the verdict on ``err``."""
    chosen = pick_cluster(settings, cluster)
    async with create_session(chosen) as session:
        client = StormClient(chosen, session)
        try:
            poll = await client.poll()
        finally:
            await client.aclose()
    try:
        out.writelines(viewer.record_bytes() + b"\n" for viewer in poll.viewers.values())
        out.flush()
    except BrokenPipeError:  # `notifier snapshot | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())  # no second error at exit
    print(verdict(poll), file=err)
    return 0 if poll.complete else 1


def verdict(poll: Poll) -> str:
    """One line: complete or not, how many viewers, how it went."""
    extra = f", {poll.duplicates} duplicates collapsed" if poll.duplicates else ""
    extra += ", totals changed while reading" if poll.drift else ""
    stats = f"{poll.pages} pages, {poll.requests} requests, {poll.duration:.2f}s{extra}"
    if poll.complete:
        return f"snapshot: {poll.cluster}: complete: {len(poll.viewers)} viewers ({stats})"
    printed = (
        f"the {len(poll.viewers)} viewers printed are not the whole audience"
        if poll.viewers
        else "no viewers printed"
    )
    return f"snapshot: {poll.cluster}: INCOMPLETE: {poll.error}; {printed} ({stats})"


def register(commands: Commands, parents: list[argparse.ArgumentParser]) -> None:
    """``notifier snapshot [--cluster C]``."""
    parser = commands.add_parser(
        "snapshot",
        parents=parents,
        help="poll one cluster once and print its viewers as JSON lines; writes nothing",
    )
    parser.add_argument("--cluster", metavar="C", help="cluster name (needed if several)")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    """Poll once; exit 1 if the poll was incomplete."""
    settings = load(args, Needs.storm_only())
    return asyncio.run(snapshot(settings, args.cluster, sys.stdout.buffer, sys.stderr))
