"""`notifier simulate`: serve a simulated Storm cluster API until asked to stop."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

import structlog

from notifier.commands._common import (
    EXIT_OK,
    duration,
    load,
    non_negative_float,
    non_negative_int,
    positive_int,
    rate,
    run_until_signal,
)
from notifier.errors import ConfigError
from notifier.logs import configure_logging
from notifier.simulator import (
    Faults,
    Incident,
    PopulationSettings,
    Ramp,
    SimulatorSettings,
    running_simulator,
)

if TYPE_CHECKING:
    import asyncio

    from notifier.commands._common import Commands

__all__ = [
    "configure_parser",
    "incident",
    "main",
    "ramp",
    "register",
    "serve",
    "settings_from_args",
]

log = structlog.get_logger("notifier.simulator")

_SEE_HELP = "(see 'notifier simulate --help')"

_SCENARIOS = """\
Scripted over the audience. START, DURATION and HOLD (500ms, 30s, 2m, 1h) count virtual time
since the simulator started, which keeps pace with the clock while --tick is above 0. A
stream's viewers are its clients other than publishers, transcoders and system clients.
The same --seed plays a scenario the same way."""


def incident(text: str) -> Incident:
    """An ``--incident`` value: ``STREAM_KEY:START:DURATION[:SHARE]``."""
    try:
        return Incident.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


def ramp(text: str) -> Ramp:
    """A ``--ramp`` value: ``STREAM_KEY:VIEWERS:DURATION[:HOLD]``."""
    try:
        return Ramp.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the `notifier simulate` options to `parser`."""
    defaults, faults = PopulationSettings(), Faults()
    net = parser.add_argument_group("listening")
    net.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    net.add_argument(
        "--port", type=int, default=8480, help="port (default %(default)s; 0 picks a free one)"
    )

    pop = parser.add_argument_group("audience")
    pop.add_argument(
        "--seed",
        type=int,
        default=defaults.seed,
        help="random seed: the same seed and options give the same audience (default 0)",
    )
    pop.add_argument(
        "--viewers",
        type=non_negative_int,
        default=defaults.viewers,
        help="initial viewers (default %(default)s)",
    )
    pop.add_argument(
        "--streams",
        type=positive_int,
        default=None,
        metavar="N",
        help="spread the audience over N streams live-1 ... live-N, watched Zipf-like (live-k"
        " in proportion to 1/k: live-1 is the biggest); default: seven streams of similar"
        " size (123, main, backstage, news, weather, sports-hd, sports-sd)",
    )
    pop.add_argument(
        "--tick",
        type=duration,
        default=1.0,
        help="virtual time step, e.g. 1s or 500ms (0: never step; default 1s)",
    )
    pop.add_argument(
        "--join-rate",
        type=rate,
        default=defaults.join_rate,
        metavar="RATE",
        help="new viewers per tick, as a share of the audience (default %(default)s)",
    )
    pop.add_argument(
        "--leave-rate",
        type=rate,
        default=defaults.leave_rate,
        metavar="RATE",
        help="share of the viewers that leave per tick (default %(default)s)",
    )
    pop.add_argument(
        "--health-change-rate",
        type=rate,
        default=defaults.health_change_rate,
        metavar="RATE",
        help="share of the viewers whose health score changes per tick (default %(default)s)",
    )
    pop.add_argument(
        "--no-data-rate",
        type=rate,
        default=defaults.no_data_rate,
        metavar="RATE",
        help='share of health samples with no data: score 0, "No Data" (default %(default)s)',
    )
    pop.add_argument(
        "--extra-fields", action="store_true", help='add an undocumented "region" to every record'
    )

    script = parser.add_argument_group("scenarios", _SCENARIOS)
    script.add_argument(
        "--incident",
        type=incident,
        action="append",
        default=[],
        metavar=Incident.FORM,
        help="a stream-wide incident: from START for DURATION, SHARE (default 0.5) of the"
        " stream's viewers, those joining meanwhile included, show a bad health score"
        " (10-40); afterwards they show a recovered one (70-100) until their health next"
        f" changes; e.g. {Incident.EXAMPLE} (repeatable)",
    )
    script.add_argument(
        "--ramp",
        type=ramp,
        action="append",
        default=[],
        metavar=Ramp.FORM,
        help="a rising audience: from the start, VIEWERS new viewers join the stream"
        " evenly over DURATION; with HOLD they stay HOLD longer, then leave evenly over"
        " DURATION (a stream of the ramp's alone then ends); a STREAM_KEY nobody watches"
        f" makes a new stream; e.g. {Ramp.EXAMPLE} (repeatable)",
    )

    auth = parser.add_argument_group("authentication")
    auth.add_argument("--username", default="admin", help='login user ("" disables login)')
    auth.add_argument("--password", default="admin", help="login password")
    auth.add_argument(
        "--token",
        action="append",
        default=[],
        metavar="TOKEN",
        help="a static Bearer token accepted forever (repeatable)",
    )
    auth.add_argument("--api-key", default=None, help="require this X-Api-Key on every request")
    auth.add_argument(
        "--token-ttl", type=duration, default=faults.token_ttl, help="login token lifetime"
    )

    fault = parser.add_argument_group("faults")
    fault.add_argument(
        "--max-rows-per-page", type=non_negative_int, default=faults.max_rows_per_page
    )
    fault.add_argument("--fault-5xx", type=rate, default=0.0, metavar="RATE")
    fault.add_argument("--fault-429", type=rate, default=0.0, metavar="RATE")
    fault.add_argument(
        "--retry-after", type=non_negative_float, default=faults.retry_after, metavar="S"
    )
    fault.add_argument("--fault-slow", type=rate, default=0.0, metavar="RATE")
    fault.add_argument(
        "--slow-seconds", type=non_negative_float, default=faults.slow_seconds, metavar="S"
    )
    fault.add_argument("--fault-malformed", type=rate, default=0.0, metavar="RATE")
    fault.add_argument("--fault-reorder", type=rate, default=0.0, metavar="RATE")
    fault.add_argument("--churn-per-request", type=non_negative_int, default=0, metavar="N")


def settings_from_args(args: argparse.Namespace) -> tuple[SimulatorSettings, Faults]:
    """The simulator settings and fault switches the parsed options describe."""
    incidents, ramps = tuple(args.incident), tuple(args.ramp)
    if (incidents or ramps) and args.tick <= 0:
        raise ConfigError(f"--incident and --ramp need --tick above 0 {_SEE_HELP}")
    try:
        population = PopulationSettings(
            seed=args.seed,
            viewers=args.viewers,
            join_rate=args.join_rate,
            leave_rate=args.leave_rate,
            health_change_rate=args.health_change_rate,
            no_data_rate=args.no_data_rate,
            tick_ms=max(1, round(args.tick * 1000)) if args.tick > 0 else 1000,
            extra_fields=args.extra_fields,
            streams=args.streams,
            incidents=incidents,
            ramps=ramps,
        )
    except ValueError as exc:
        raise ConfigError(f"--incident: {exc} {_SEE_HELP}") from None
    settings = SimulatorSettings(
        population=population,
        username=args.username or None,
        password=args.password if args.username else None,
        static_tokens=tuple(args.token),
        api_key=args.api_key,
        tick=args.tick if args.tick > 0 else None,
    )
    faults = Faults(
        seed=args.seed,
        error_rate=args.fault_5xx,
        rate_limit_rate=args.fault_429,
        retry_after=args.retry_after,
        slow_rate=args.fault_slow,
        slow_seconds=args.slow_seconds,
        malformed_rate=args.fault_malformed,
        reorder_rate=args.fault_reorder,
        churn_per_request=args.churn_per_request,
        max_rows_per_page=max(1, args.max_rows_per_page),
        token_ttl=args.token_ttl,
    )
    return settings, faults


def register(commands: Commands, parents: list[argparse.ArgumentParser]) -> None:
    """``notifier simulate --port N ...``."""
    parser = commands.add_parser(
        "simulate", parents=parents, help="serve a simulated Storm cluster API"
    )
    configure_parser(parser)
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; a config, if one is named, only sets up logging."""
    settings_from_args(args)  # a bad combination of options is a usage error, before anything
    if args.config is not None or os.environ.get("NOTIFIER_CONFIG"):
        load(args)
    else:
        configure_logging(fmt="console" if sys.stderr.isatty() else "json")

    async def until_stopped(stop: asyncio.Event) -> int:
        await serve(args, stop)
        return EXIT_OK

    return run_until_signal(until_stopped)


async def serve(args: argparse.Namespace, stop: asyncio.Event) -> None:
    """Serve until `stop` is set, then shut down and log one summary line."""
    settings, faults = settings_from_args(args)
    async with running_simulator(settings, faults, host=args.host, port=args.port) as running:
        log.info(
            "simulator.listening",
            url=running.url,
            viewers=len(running.population),
            seed=settings.population.seed,
            tick=settings.tick,
            streams=settings.population.streams,
            incidents=len(settings.population.incidents),
            ramps=len(settings.population.ramps),
        )
        await stop.wait()
        stats = running.stats
    log.info(
        "simulator.stopped",
        url=running.url,
        list_requests=stats.list_requests,
        logins=stats.logins,
        ticks=running.population.tick,
        viewers=len(running.population),
    )
