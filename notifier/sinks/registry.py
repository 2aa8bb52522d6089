"""Sink types: the one table of built-ins, and third-party ones found through entry points.

Every sink type, built in or not, is a factory of the same shape (``notifier.sinks.base.
SinkFactory``): ``settings_model`` (a subclass of ``SinkBaseSettings`` with a ``type``) and
``create(settings) -> Sink``. A third-party package registers its factory in the entry-point
group ``notifier.sinks``::

    [project.entry-points."notifier.sinks"]
    pager = "my_package.sink:factory"

Entry points are looked up only when a configuration names a type that is not built in.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING

from pydantic import ValidationError

from notifier.errors import ConfigError
from notifier.sinks import slack, stdout, webhook

if TYPE_CHECKING:
    from collections.abc import Mapping

    from notifier.sinks.base import Sink, SinkFactory
    from notifier.sinks.settings import SinkBaseSettings

__all__ = ["BUILTIN_SINKS", "ENTRY_POINT_GROUP", "create_sink", "factory_for", "validate_plugin"]

ENTRY_POINT_GROUP = "notifier.sinks"

BUILTIN_SINKS: Mapping[str, SinkFactory] = {
    "webhook": webhook.SINK_TYPE,
    "slack": slack.SINK_TYPE,
    "stdout": stdout.SINK_TYPE,
}
"""The built-in sink types, by the ``type`` a configuration names them with."""


@cache
def plugin_types() -> dict[str, EntryPoint]:
    """Entry points of installed third-party sinks, by type name (loaded on use)."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def factory_for(kind: str) -> SinkFactory:
    """The factory of a sink type; ``ConfigError`` naming the known types if there is none."""
    if kind in BUILTIN_SINKS:
        return BUILTIN_SINKS[kind]
    entry = plugin_types().get(kind)
    if entry is None:
        installed = sorted(plugin_types())
        extra = f"; installed: {', '.join(installed)}" if installed else ""
        raise ConfigError(f"unknown sink type (built in: {', '.join(BUILTIN_SINKS)}{extra})")
    try:
        factory: SinkFactory = entry.load()
    except Exception as exc:  # noqa: BLE001 - a broken plugin is a configuration problem
        raise ConfigError(f"sink type {kind!r}: cannot load {entry.value}: {exc}") from None
    return factory


def validate_plugin(settings: SinkBaseSettings, where: str) -> SinkBaseSettings:
    """A third-party sink's settings, validated by its own model; errors name ``where``."""
    if settings.type in BUILTIN_SINKS:
        return settings
    try:
        model = factory_for(settings.type).settings_model
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    try:
        return model.model_validate(settings.model_dump())
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{where}.{loc}: {first['msg']}") from None


def create_sink(settings: SinkBaseSettings) -> Sink:
    """The sink for validated settings (built-in or third-party)."""
    return factory_for(settings.type).create(settings)
