"""The ``sinks:`` section: each item validated by the settings model of its ``type``.

The built-in models come from the one table in ``registry``; any other ``type`` is taken as a
plugin's for now (``PluginSinkSettings`` keeps its extra keys) and validated by that plugin's
own model once the whole file is read (``validate_plugins``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import ConfigDict, Discriminator, Tag

from notifier.sinks.registry import BUILTIN_SINKS, validate_plugin
from notifier.sinks.settings import SinkBaseSettings

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["PLUGIN_TAG", "PluginSinkSettings", "SinkSettings", "validate_plugins"]

PLUGIN_TAG = "plugin"
"""The tag of items whose type is not built in (a plugin's, or unknown)."""


class PluginSinkSettings(SinkBaseSettings):
    """A third-party sink; its own keys are validated by its factory's model at start-up."""

    model_config = ConfigDict(extra="allow")


def _sink_type(value: object) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    if not isinstance(kind, str):
        return None
    return kind if kind in BUILTIN_SINKS else PLUGIN_TAG


def _union() -> Any:
    members = [Annotated[f.settings_model, Tag(k)] for k, f in BUILTIN_SINKS.items()]
    members.append(Annotated[PluginSinkSettings, Tag(PLUGIN_TAG)])
    return Annotated[
        Union[tuple(members)],  # noqa: UP007 - built from the table at run time
        Discriminator(_sink_type, custom_error_type="sink_type", custom_error_message="no type"),
    ]


if TYPE_CHECKING:
    SinkSettings = SinkBaseSettings
else:
    SinkSettings = _union()
"""One sink item: the model its ``type`` selects."""


def validate_plugins(sinks: Sequence[SinkBaseSettings]) -> tuple[SinkBaseSettings, ...]:
    """Every plugin item validated by its own model (``ConfigError`` naming ``sinks[i]``)."""
    return tuple(validate_plugin(s, f"sinks[{i}]") for i, s in enumerate(sinks))
