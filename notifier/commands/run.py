"""``notifier run``: the service, until SIGINT or SIGTERM (``notifier.service``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from notifier.commands._common import load, run_until_signal
from notifier.config import Needs

if TYPE_CHECKING:
    import argparse

    from notifier.commands._common import Commands

__all__ = ["main", "register"]


def register(commands: Commands, parents: list[argparse.ArgumentParser]) -> None:
    """``notifier run [--role all|poller|sinks]``."""
    parser = commands.add_parser(
        "run", parents=parents, help="the service: poll clusters and emit events until SIGTERM"
    )
    parser.add_argument(
        "--role",
        choices=["all", "poller", "sinks"],
        default="all",
        help="pollers, sink workers, or both (default)",
    )
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    """Run the service until a signal; 0 after a graceful stop."""
    from notifier.service import run_service  # noqa: PLC0415 - the service loads on demand

    # A sinks-only process never logs in to Storm; a poller-only one never delivers.
    needs = {"sinks": Needs(storm=False), "poller": Needs(sinks=False)}.get(args.role, Needs())
    settings = load(args, needs)
    return run_until_signal(lambda stop: run_service(settings, stop, role=args.role))
