"""The ``notifier`` command line.

Every command takes ``--config``. Exit status: 0 success, 2 usage or configuration error,
1 anything else, always with a one-line reason on standard error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from typing import TYPE_CHECKING, NoReturn

from redis.exceptions import RedisError

from notifier import __version__
from notifier.config import Settings, load_settings
from notifier.durations import parse_duration
from notifier.errors import ConfigError, NotifierError
from notifier.logs import configure_logging

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Sequence
    from typing import Any

__all__ = ["main"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors as one line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"notifier: {message} (see '{self.prog} --help')\n")


def _build_parser() -> argparse.ArgumentParser:
    from notifier.simulator import command as simulate_command  # noqa: PLC0415 - aiohttp.web

    common = _Parser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        help="configuration file (default: $NOTIFIER_CONFIG, else config/notifier.yaml)",
    )
    parser = _Parser(
        prog="notifier",
        description="Push events for the live audience of Storm Streaming Server clusters.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"storm-notifier {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    snapshot = commands.add_parser(
        "snapshot",
        parents=[common],
        help="poll one cluster once and print its viewers as JSON lines; writes nothing",
    )
    snapshot.add_argument("--cluster", metavar="C", help="cluster name (needed if several)")
    snapshot.set_defaults(handler=_snapshot)

    check = commands.add_parser(
        "check-config",
        parents=[common],
        help="validate the configuration and reach each Storm cluster and Redis",
    )
    check.add_argument("--offline", action="store_true", help="validate only; contact nothing")
    check.set_defaults(handler=_check_config)

    schema = commands.add_parser(
        "config-schema",
        parents=[common],
        help="print the JSON Schema of the configuration (for editors); reads no config file",
    )
    schema.set_defaults(handler=_config_schema)

    run = commands.add_parser(
        "run", parents=[common], help="the service: poll clusters and emit events until SIGTERM"
    )
    run.add_argument(
        "--role",
        choices=["all", "poller", "sinks"],
        default="all",
        help="pollers, sink workers, or both (default)",
    )
    run.set_defaults(handler=_run)

    tail = commands.add_parser(
        "tail", parents=[common], help="follow the event streams, one JSON event per line"
    )
    tail.add_argument("--cluster", metavar="C", help="one cluster (default: all)")
    tail.add_argument(
        "--from",
        dest="start",
        metavar="ID",
        default="$",
        help="stream entry id to start after: $ (default) new events only, 0 from the start",
    )
    tail.set_defaults(handler=_tail)

    replay = commands.add_parser(
        "replay", parents=[common], help="redeliver past events to one sink"
    )
    replay.add_argument("--sink", required=True, metavar="S")
    replay.add_argument(
        "--from",
        dest="start",
        required=True,
        metavar="TIME|ID",
        help="UTC time (2026-02-05T08:22:40Z), Unix ms, or a stream entry id",
    )
    replay.add_argument("--to", dest="end", metavar="TIME|ID", help="default: the newest event")
    replay.add_argument("--cluster", metavar="C", help="one cluster (default: all)")
    replay.set_defaults(handler=_replay)

    dlq = commands.add_parser("dlq", parents=[common], help="inspect and redrive dead letters")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", metavar="ACTION", parser_class=_Parser)
    dlq_commands.required = True
    for action, text in (
        ("list", "print dead letters as JSON lines"),
        ("redrive", "deliver dead letters again; delivered ones are removed"),
        ("purge", "delete dead letters"),
    ):
        sub = dlq_commands.add_parser(action, parents=[common], help=text)
        sub.add_argument("--sink", required=True, metavar="S")
        sub.add_argument("--cluster", metavar="C", help="one cluster (default: all)")
        if action == "list":
            sub.add_argument(
                "--count", type=_positive, default=1000, help="at most this many a cluster"
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
        sub.set_defaults(handler=_dlq)

    demo = commands.add_parser(
        "demo",
        parents=[common],
        help="everything on this machine with no setup: simulator, embedded Redis, sinks",
    )
    demo.add_argument(
        "--duration",
        type=_seconds,
        metavar="D",
        help="stop by itself after this long (e.g. 20s); default: until Ctrl-C",
    )
    demo.add_argument("--viewers", type=int, default=300, help="simulated audience (default 300)")
    demo.add_argument("--seed", type=int, default=7, help="simulator seed (default 7)")
    demo.set_defaults(handler=_demo)

    simulate = commands.add_parser(
        "simulate", parents=[common], help="serve a simulated Storm cluster API"
    )
    simulate_command.configure_parser(simulate)
    simulate.set_defaults(handler=_simulate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (the console script exits with it)."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except ConfigError as exc:
        return _fail(EXIT_USAGE, str(exc))
    except NotifierError as exc:
        return _fail(EXIT_FAILURE, str(exc))
    except RedisError as exc:
        return _fail(EXIT_FAILURE, f"redis: {type(exc).__name__}: {exc}")
    except KeyboardInterrupt:
        return _fail(EXIT_FAILURE, "interrupted")
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, exit 1
        return _fail(EXIT_FAILURE, f"unexpected error: {type(exc).__name__}: {exc}")


def _fail(status: int, message: str) -> int:
    print(f"notifier: {' '.join(message.split())}", file=sys.stderr)
    return status


def _load(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config, os.environ)
    configure_logging(fmt=settings.logging.format, level=settings.logging.level)
    return settings


def _run_until_signal(main_coro: Callable[[asyncio.Event], Coroutine[Any, Any, int]]) -> int:
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


# --- commands ----------------------------------------------------------------------------------


def _snapshot(args: argparse.Namespace) -> int:
    from notifier.commands.snapshot import snapshot  # noqa: PLC0415 - keep start-up light

    settings = _load(args)
    return asyncio.run(snapshot(settings, args.cluster, sys.stdout.buffer, sys.stderr))


def _check_config(args: argparse.Namespace) -> int:
    from notifier.commands.check import check_config  # noqa: PLC0415

    settings = _load(args)
    return asyncio.run(check_config(settings, sys.stdout, offline=args.offline))


def _config_schema(_args: argparse.Namespace) -> int:
    from notifier.commands.schema import config_schema  # noqa: PLC0415

    print(json.dumps(config_schema(), indent=2))
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    from notifier.service import run_service  # noqa: PLC0415

    settings = _load(args)
    return _run_until_signal(lambda stop: run_service(settings, stop, role=args.role))


def _tail(args: argparse.Namespace) -> int:
    from notifier.commands.tail import tail  # noqa: PLC0415

    settings = _load(args)
    return _run_until_signal(
        lambda stop: tail(settings, stop, sys.stdout.buffer, cluster=args.cluster, start=args.start)
    )


def _replay(args: argparse.Namespace) -> int:
    from notifier.commands.redeliver import parse_position, replay  # noqa: PLC0415

    settings = _load(args)
    start = parse_position(args.start)
    end = parse_position(args.end, end=True) if args.end else "+"
    return asyncio.run(
        replay(settings, sink_name=args.sink, start=start, end=end, cluster=args.cluster)
    )


def _dlq(args: argparse.Namespace) -> int:
    from notifier.commands import redeliver  # noqa: PLC0415

    settings = _load(args)
    if args.dlq_command == "list":
        return asyncio.run(
            redeliver.dlq_list(
                settings,
                sink_name=args.sink,
                cluster=args.cluster,
                count=args.count,
                out=sys.stdout,
            )
        )
    if args.dlq_command == "redrive":
        return asyncio.run(
            redeliver.dlq_redrive(settings, sink_name=args.sink, cluster=args.cluster, ids=args.ids)
        )
    before = redeliver.parse_position(args.before) if args.before else None
    return asyncio.run(
        redeliver.dlq_purge(
            settings, sink_name=args.sink, cluster=args.cluster, before=before, out=sys.stdout
        )
    )


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number, 1 or more")
    return int(text)


def _seconds(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


def _demo(args: argparse.Namespace) -> int:
    from notifier.demo import run_demo  # noqa: PLC0415 - rich and fakeredis load on demand

    if args.viewers < 1:
        raise ConfigError("--viewers must be at least 1")
    configure_logging(fmt="console", level="error")
    return _run_until_signal(
        lambda stop: run_demo(
            duration=args.duration, viewers=args.viewers, seed=args.seed, stop=stop
        )
    )


def _simulate(args: argparse.Namespace) -> int:
    from notifier.simulator import command as simulate_command  # noqa: PLC0415

    if args.config is not None or os.environ.get("NOTIFIER_CONFIG"):
        _load(args)
    else:
        configure_logging(fmt="console" if sys.stderr.isatty() else "json")

    async def serve(stop: asyncio.Event) -> int:
        await simulate_command.run(args, stop)
        return EXIT_OK

    return _run_until_signal(serve)


def run() -> NoReturn:
    """Console-script entry point."""
    sys.exit(main())
