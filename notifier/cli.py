"""The ``notifier`` command line: one parser built from the command modules.

Every command takes ``--config``. Exit status: 0 success, 2 usage or configuration error,
1 anything else, always with a one-line reason on standard error. Each command lives in
``notifier.commands.<name>`` with its ``register`` (the parser) and ``main`` (the run).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, NoReturn

from redis.exceptions import RedisError

from notifier import __version__
from notifier.commands import (
    EXIT_FAILURE,
    EXIT_USAGE,
    Parser,
    check,
    demo,
    dlq,
    replay,
    run,
    schema,
    simulate,
    snapshot,
    status,
    tail,
)
from notifier.errors import ConfigError, NotifierError

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence

__all__ = ["COMMANDS", "main", "run_cli"]

COMMANDS = (snapshot, check, schema, run, status, tail, replay, dlq, demo, simulate)
"""In the order ``notifier --help`` lists them."""


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every command's."""
    parser = Parser(
        prog="notifier",
        description="Push events for the live audience of Storm Streaming Server clusters.",
        parents=[Parser.config_option(top_level=True)],
    )
    parser.add_argument("--version", action="version", version=f"storm-notifier {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    commands.required = True
    for command in COMMANDS:
        command.register(commands, [Parser.config_option(top_level=False)])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (the console script exits with it)."""
    args = build_parser().parse_args(argv)
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


def run_cli() -> NoReturn:
    """Console-script entry point."""
    sys.exit(main())
