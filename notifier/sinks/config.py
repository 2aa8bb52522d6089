"""The ``sinks:`` section: each item validated by the settings model of its ``type``."""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Discriminator, Tag

from notifier.sinks.registry import BUILTIN_SINK_TYPES, plugin_types
from notifier.sinks.settings import RetrySettings, SinkBaseSettings, SinkFilter
from notifier.sinks.slack.config import SlackSinkSettings
from notifier.sinks.stdout import StdoutSinkSettings
from notifier.sinks.webhook.config import WebhookSinkSettings

__all__ = [
    "BUILTIN_SINK_TYPES",
    "PluginSinkSettings",
    "RetrySettings",
    "SinkFilter",
    "SinkSettings",
    "SlackSinkSettings",
    "StdoutSinkSettings",
    "WebhookSinkSettings",
]


class PluginSinkSettings(SinkBaseSettings):
    """A third-party sink; its own keys are validated by its factory's model at start-up."""

    model_config = ConfigDict(extra="allow")


def _sink_type(value: object) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    if not isinstance(kind, str):
        return None
    if kind in BUILTIN_SINK_TYPES:
        return kind
    return "plugin" if kind in plugin_types() else None


SinkSettings = Annotated[
    Annotated[WebhookSinkSettings, Tag("webhook")]
    | Annotated[SlackSinkSettings, Tag("slack")]
    | Annotated[StdoutSinkSettings, Tag("stdout")]
    | Annotated[PluginSinkSettings, Tag("plugin")],
    Discriminator(
        _sink_type,
        custom_error_type="sink_type",
        custom_error_message="unknown sink type",
    ),
]
