"""Sink types: the built-ins by ``type``, and third-party ones from entry points.

A third-party package registers a factory in the entry-point group ``notifier.sinks``::

    [project.entry-points."notifier.sinks"]
    pager = "my_package.sink:factory"

The factory has ``settings_model`` (a subclass of ``SinkBaseSettings`` with ``type``) and
``create(settings) -> Sink``. Its settings are validated at start-up like the built-ins'.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import ValidationError

from notifier.errors import ConfigError
from notifier.sinks.slack.config import SlackSinkSettings
from notifier.sinks.stdout import StdoutSink, StdoutSinkSettings
from notifier.sinks.webhook.config import WebhookSinkSettings

if TYPE_CHECKING:
    from notifier.sinks.base import Sink
    from notifier.sinks.settings import SinkBaseSettings

__all__ = ["BUILTIN_SINK_TYPES", "ENTRY_POINT_GROUP", "SinkFactory", "create_sink", "plugin_types"]

ENTRY_POINT_GROUP = "notifier.sinks"
BUILTIN_SINK_TYPES = ("webhook", "slack", "stdout")


class SinkFactory(Protocol):
    """What a sink type provides: its settings model and a constructor."""

    @property
    def settings_model(self) -> type[SinkBaseSettings]:
        """The pydantic model of the sink's settings (with a ``type`` field)."""
        ...

    def create(self, settings: Any) -> Sink:
        """A sink for validated ``settings`` (an instance of ``settings_model``)."""
        ...


@dataclass(frozen=True, slots=True)
class _Builtin:
    settings_model: type[SinkBaseSettings]
    kind: str

    def create(self, settings: Any) -> Sink:
        if self.kind == "webhook":
            from notifier.sinks.webhook.sink import WebhookSink  # noqa: PLC0415 - aiohttp

            return WebhookSink(settings)
        if self.kind == "slack":
            from notifier.sinks.slack.sink import SlackSink  # noqa: PLC0415

            return SlackSink(settings)
        return StdoutSink(settings)


_BUILTINS: dict[str, SinkFactory] = {
    "webhook": _Builtin(WebhookSinkSettings, "webhook"),
    "slack": _Builtin(SlackSinkSettings, "slack"),
    "stdout": _Builtin(StdoutSinkSettings, "stdout"),
}


@cache
def plugin_types() -> dict[str, Any]:
    """Entry points of installed third-party sinks, by type name (loaded on use)."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def factory_for(kind: str) -> SinkFactory:
    """The factory of a sink type; ``ConfigError`` naming the known types if there is none."""
    if kind in _BUILTINS:
        return _BUILTINS[kind]
    entry = plugin_types().get(kind)
    if entry is None:
        known = ", ".join([*BUILTIN_SINK_TYPES, *sorted(plugin_types())])
        raise ConfigError(f"unknown sink type {kind!r} (known: {known})")
    try:
        factory: SinkFactory = entry.load()
    except Exception as exc:  # noqa: BLE001 - a broken plugin is a configuration problem
        raise ConfigError(f"sink type {kind!r}: cannot load {entry.value}: {exc}") from None
    return factory


def validate_plugin(settings: SinkBaseSettings, where: str) -> SinkBaseSettings:
    """Validate a third-party sink's settings with its own model; errors name the key."""
    if settings.type in _BUILTINS:
        return settings
    model = factory_for(settings.type).settings_model
    try:
        return model.model_validate(settings.model_dump())
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{where}.{loc}: {first['msg']}") from None


def create_sink(settings: SinkBaseSettings) -> Sink:
    """The sink for validated settings (built-in or third-party)."""
    return factory_for(settings.type).create(settings)
