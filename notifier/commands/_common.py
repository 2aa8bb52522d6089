"""What every command shares: loading the config, running until a signal, argument types.

Each command module has the same two functions: ``register(commands, parents)`` adds its
parser (with ``handler=main``), and ``main(args) -> int`` runs it and returns the exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn, TypeAlias

from notifier.config import ALL_SECRETS, Needs, load_settings
from notifier.durations import parse_duration
from notifier.errors import ConfigError
from notifier.logs import configure_logging

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from notifier.config import Settings
    from notifier.sinks.settings import SinkBaseSettings

__all__ = [
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "Parser",
    "cluster_names",
    "duration",
    "load",
    "non_negative_float",
    "non_negative_int",
    "parse_position",
    "positive_int",
    "rate",
    "run_until_signal",
    "sink_settings",
]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

if TYPE_CHECKING:
    Commands: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]
    """What ``register`` adds its parser to."""


class Parser(argparse.ArgumentParser):
    """argparse, with usage errors as one line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        """One line on stderr, exit 2."""
        self.exit(EXIT_USAGE, f"notifier: {message} (see '{self.prog} --help')\n")

    @classmethod
    def config_option(cls, *, top_level: bool) -> Parser:
        """A parent parser with ``--config PATH``, for the top level or for a command.

        ``notifier --config A snapshot`` and ``notifier snapshot --config A`` both use ``A``;
        given twice, the later one wins. A command's copy has no default: argparse copies a
        subparser's defaults over what the top level parsed, so a default of None there would
        silently undo ``notifier --config A``.
        """
        parent = cls(add_help=False)
        parent.add_argument(
            "--config",
            metavar="PATH",
            default=None if top_level else argparse.SUPPRESS,
            help="configuration file (default: $NOTIFIER_CONFIG, else config/notifier.yaml)",
        )
        return parent


def load(args: argparse.Namespace, needs: Needs = ALL_SECRETS) -> Settings:
    """The configuration named by ``--config`` (else ``$NOTIFIER_CONFIG``), logging set up.

    ``needs``: the secrets the command uses; unset ``${VAR}``s of the others are no error.
    """
    settings = load_settings(args.config, os.environ, needs=needs)
    configure_logging(fmt=settings.logging.format, level=settings.logging.level)
    return settings


def run_until_signal(main_coro: Callable[[asyncio.Event], Coroutine[Any, Any, int]]) -> int:
    """Run ``main_coro(stop)``; SIGINT and SIGTERM set ``stop`` instead of killing the process."""

    async def runner() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            return await main_coro(stop)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    return asyncio.run(runner())


def _number(text: str, kind: type[int] | type[float], what: str) -> float:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected {what}") from None


def positive_int(text: str) -> int:
    """A whole number, 1 or more."""
    value = int(_number(text, int, "a whole number, 1 or more"))
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number, 1 or more")
    return value


def non_negative_int(text: str) -> int:
    """A whole number, 0 or more."""
    value = int(_number(text, int, "a whole number, 0 or more"))
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must not be negative")
    return value


def non_negative_float(text: str) -> float:
    """A number, 0 or more."""
    value = _number(text, float, "a number")
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must not be negative")
    return value


def rate(text: str) -> float:
    """A rate between 0 and 1."""
    value = _number(text, float, "a rate between 0 and 1")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r}: a rate is between 0 and 1")
    return value


def duration(text: str) -> float:
    """Seconds from ``500ms``, ``2s``, ``1.5m``, ``1h`` or a bare number of seconds."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


_ENTRY_ID = re.compile(r"^\d+(-\d+)?$")
_LAST_SEQ = "18446744073709551615"


def parse_position(text: str, *, end: bool = False) -> str:
    """A stream position from an entry id (``1700000000000-0``), Unix ms, or an ISO time.

    With ``end``, a time or bare milliseconds means the last id of that millisecond.
    """
    text = text.strip()
    if _ENTRY_ID.match(text):
        return text if "-" in text or not end else f"{text}-{_LAST_SEQ}"
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T"))
    except ValueError:
        raise ConfigError(
            f"{text!r}: expected an entry id (1700000000000-0), Unix ms, or a time"
            " like 2026-02-05T08:22:40Z (UTC unless an offset is given)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    ms = int(moment.timestamp() * 1000)
    return f"{ms}-{_LAST_SEQ}" if end else f"{ms}-0"


def sink_settings(settings: Settings, name: str) -> SinkBaseSettings:
    """The sink called ``name``; ``ConfigError`` naming the configured ones if there is none."""
    for sink in settings.sinks:
        if sink.name == name:
            return sink
    known = ", ".join(s.name for s in settings.sinks) or "none"
    raise ConfigError(f"no sink named {name!r} (configured: {known})")


def cluster_names(settings: Settings, cluster: str | None) -> list[str]:
    """``[cluster]`` if given (checked), else every configured cluster."""
    return [settings.cluster(cluster).name] if cluster else [c.name for c in settings.clusters]
