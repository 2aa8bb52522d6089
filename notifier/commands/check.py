"""``notifier check-config``: validate, print a masked summary, reach every dependency: each
Storm cluster, Redis, and the Slack Web API for each Slack app sink's token (``auth.test``)."""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, Annotated, Any, TextIO, get_args, get_origin

import yaml
from pydantic import BaseModel, BeforeValidator, SecretStr

from notifier.commands._common import load
from notifier.durations import format_duration, parse_duration
from notifier.errors import NotifierError, StormError
from notifier.http import redact_url
from notifier.redis_client import REDIS_ERRORS, connect_redis, redis_reason
from notifier.sinks.slack import SlackSinkSettings
from notifier.sinks.slack.answers import outcome
from notifier.sinks.slack.webapi import SlackWebApi
from notifier.storm import StormClient, create_session

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

    from notifier.commands._common import Commands
    from notifier.config import Settings
    from notifier.redis_client import RedisSettings
    from notifier.storm.settings import ClusterSettings

__all__ = ["check_config", "main", "masked_summary", "register"]

CHECK_TIMEOUT = 15.0


def masked_summary(settings: Settings) -> dict[str, Any]:
    """The settings as plain data, as they would be written: durations as ``2s`` or ``1d``,
    every secret ``**********``, except URLs, shown as scheme and host (``https://host/***``),
    and the Redis URL with its password masked."""
    summary: dict[str, Any] = _plain(settings, Any, ())
    summary["redis"]["url"] = settings.redis.display_url()
    return summary


def _plain(value: Any, annotation: Any, metadata: Sequence[Any]) -> Any:
    """``value`` (of a field typed ``annotation`` with ``metadata``) as YAML-ready data."""
    if isinstance(value, BaseModel):
        fields = type(value).model_fields
        return {k: _plain(getattr(value, k), f.annotation, f.metadata) for k, f in fields.items()}
    if isinstance(value, SecretStr):
        text = value.get_secret_value()
        return _masked_url(text) if text.startswith(("http://", "https://")) else str(value)
    if isinstance(value, tuple | list):
        item = next(iter(get_args(annotation)), Any)
        return [_plain(v, item, ()) for v in value]
    if isinstance(value, dict):
        item = (*get_args(annotation), Any, Any)[1]
        return {str(k): _plain(v, item, ()) for k, v in value.items()}
    if isinstance(value, float) and _is_duration(annotation, metadata):
        return format_duration(value)
    return value


def _is_duration(annotation: Any, metadata: Sequence[Any]) -> bool:
    """Whether the annotation is ``Seconds`` (``notifier._model``): parsed by parse_duration."""
    if any(isinstance(m, BeforeValidator) and m.func is parse_duration for m in metadata):
        return True
    if get_origin(annotation) is Annotated:
        return _is_duration(get_args(annotation)[0], annotation.__metadata__)
    return any(_is_duration(arg, ()) for arg in get_args(annotation))


def _masked_url(url: str) -> str:
    """``https://hooks.slack.com/***``: scheme and host, as ``redact_url`` shows them."""
    return redact_url(url).removesuffix("…") + "***"


async def check_config(settings: Settings, out: TextIO, *, offline: bool = False) -> int:
    """Print the masked settings and one line per dependency; 1 if any is unreachable."""
    out.write("# configuration is valid; secrets are masked\n")
    out.write(yaml.safe_dump(masked_summary(settings), sort_keys=False, allow_unicode=True))
    if offline:
        return 0
    checks = [_check_cluster(cluster) for cluster in settings.clusters]
    checks.append(_check_redis(settings.redis))
    checks += [
        _check_slack(sink)
        for sink in settings.sinks
        if isinstance(sink, SlackSinkSettings) and sink.token is not None
    ]
    results = await asyncio.gather(*checks)
    out.write("# dependencies\n")
    for line, _ in results:
        out.write(line + "\n")
    failed = [line for line, ok in results if not ok]
    if failed:
        raise NotifierError(f"check-config: {len(failed)} of {len(results)} dependencies failed")
    return 0


async def _check_cluster(cluster: ClusterSettings) -> tuple[str, bool]:
    """Count the viewers, within ``CHECK_TIMEOUT``: as the poll budget, so that a cluster
    that keeps failing is reported with the cause (``connection refused``, the login limit)."""
    how = "login" if cluster.auth.uses_login else "token"
    cluster = cluster.model_copy(update={"poll_budget": min(cluster.poll_budget, CHECK_TIMEOUT)})
    try:
        async with asyncio.timeout(CHECK_TIMEOUT + 5), create_session(cluster) as session:
            client = StormClient(cluster, session)
            try:
                count = await client.count()
            finally:
                await client.aclose()
    except StormError as exc:
        return f"cluster {cluster.name}: FAILED ({how}): {exc}", False
    except TimeoutError:  # the budget did not cut it: a request that never ended
        return f"cluster {cluster.name}: FAILED: no answer within {CHECK_TIMEOUT + 5:g}s", False
    viewers = "an unknown number of" if count is None else str(count)
    return f"cluster {cluster.name}: ok ({how}): {viewers} viewers", True


async def _check_redis(settings: RedisSettings) -> tuple[str, bool]:
    where = settings.display_url()
    client = connect_redis(settings)
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await client.ping()
            info = await client.info("server")
    except REDIS_ERRORS as exc:
        return f"redis {where}: FAILED: {redis_reason(exc)}", False
    finally:
        await client.aclose()
    version = _redis_version(info)
    return f"redis {where}: ok (redis {version})", True


async def _check_slack(sink: SlackSinkSettings) -> tuple[str, bool]:
    """A Slack app sink's token, by ``auth.test`` (its channel is first seen when it posts)."""
    assert sink.token is not None  # noqa: S101 - app-mode sinks only
    api = SlackWebApi(sink.token, sink.api_url, timeout=min(sink.timeout, CHECK_TIMEOUT))
    try:
        answer = await api.identity()
    finally:
        await api.aclose()
    if not answer.ok:
        return f"slack {sink.name}: FAILED: {getattr(outcome(answer), 'reason', '')}", False
    return f"slack {sink.name}: ok (the bot {answer.who or 'is known'})", True


def _redis_version(info: Any) -> str:
    if isinstance(info, dict) and "redis_version" in info:
        return str(info["redis_version"])
    if isinstance(info, dict):  # a cluster answers per node
        versions = {str(v.get("redis_version")) for v in info.values() if isinstance(v, dict)}
        return ", ".join(sorted(versions)) or "unknown version"
    return "unknown version"


def register(commands: Commands, parents: list[argparse.ArgumentParser]) -> None:
    """``notifier check-config [--offline]``."""
    parser = commands.add_parser(
        "check-config",
        parents=parents,
        help="validate the configuration and reach each Storm cluster and Redis",
    )
    parser.add_argument("--offline", action="store_true", help="validate only; contact nothing")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    """Validate, print the masked summary, check the dependencies unless ``--offline``."""
    settings = load(args)
    return asyncio.run(check_config(settings, sys.stdout, offline=args.offline))
