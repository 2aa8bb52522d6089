"""Sink types: the one table of built-ins, and third-party ones found through entry points.

Every sink type, built in or not, is a factory of the same shape (``notifier.sinks.base.
SinkFactory``): ``settings_model`` (a subclass of ``SinkBaseSettings`` with a ``type``) and
``create(settings, context) -> Sink``. A third-party package registers its factory in the
entry-point group ``notifier.sinks``::

    [project.entry-points."notifier.sinks"]
    pager = "my_package.sink:factory"

Entry points are looked up only when a configuration names a type that is not built in. A
plugin written before sinks were handed a ``SinkContext`` has ``create(settings)``: it is
adapted here, once, when it loads (``_with_context``), so it keeps working unchanged.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from notifier.errors import ConfigError
from notifier.sinks import slack, stdout, webhook

if TYPE_CHECKING:
    from collections.abc import Mapping

    from notifier.sinks.base import Sink, SinkContext, SinkFactory
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
    return _with_context(factory)


@dataclass(frozen=True, slots=True)
class _SettingsOnly:
    """A plugin factory of the first interface, ``create(settings)``, as a ``SinkFactory``."""

    factory: Any

    @property
    def settings_model(self) -> type[SinkBaseSettings]:
        model: type[SinkBaseSettings] = self.factory.settings_model
        return model

    def create(self, settings: Any, context: SinkContext) -> Sink:  # noqa: ARG002 - unused
        sink: Sink = self.factory.create(settings)
        return sink


def _with_context(factory: Any) -> SinkFactory:
    """``factory`` itself if its ``create`` takes the context, else adapted (``_SettingsOnly``)."""
    try:
        parameters = inspect.signature(factory.create).parameters.values()
    except (AttributeError, TypeError, ValueError):
        return factory  # type: ignore[no-any-return]  # not inspectable: take it as it is
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return factory  # type: ignore[no-any-return]
    return _SettingsOnly(factory)


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


def create_sink(settings: SinkBaseSettings, context: SinkContext) -> Sink:
    """The sink for validated settings (built-in or third-party), with the runner's context."""
    return factory_for(settings.type).create(settings, context)
