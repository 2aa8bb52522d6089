"""``notifier config-schema``: the configuration as JSON Schema (draft 2020-12), for editors.

The schema is generated from the settings models (``Settings.model_json_schema()``), then
adjusted where a model accepts more than pydantic can say in JSON Schema:

- every string key also takes a number (the models coerce numbers to strings: ``password: 1234``
  and ``stream_keys: [123]`` are valid), unless it has a pattern;
- a webhook ``secret`` is one string or a list of them;
- a built-in sink's ``type`` is required (it selects the model), and the sink list takes, besides
  the built-in types, any other ``type`` with the keys every sink has: a plugin's own keys are
  only known once it is installed, and are validated at start-up;
- secret defaults (the Redis URL) are shown as they are, not masked.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, SecretStr
from pydantic.json_schema import GenerateJsonSchema

from notifier.commands._common import EXIT_OK
from notifier.config import Settings
from notifier.sinks.config import PluginSinkSettings
from notifier.sinks.registry import BUILTIN_SINKS

if TYPE_CHECKING:
    import argparse

    from notifier.commands._common import Commands

__all__ = ["SCHEMA_DIALECT", "config_schema", "main", "register"]

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_SINK_MODELS = {kind: factory.settings_model.__name__ for kind, factory in BUILTIN_SINKS.items()}
_PLUGIN_MODEL = PluginSinkSettings.__name__


class _Generator(GenerateJsonSchema):
    """Pydantic's generator, with secret defaults shown as they are (they are not secrets)."""

    def encode_default(self, dft: Any) -> Any:
        """The default as JSON, secrets revealed."""
        return super().encode_default(_reveal(dft))


def _reveal(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return _reveal(dict(value))
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {k: _reveal(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_reveal(v) for v in value]
    return value


def config_schema() -> dict[str, Any]:
    """The JSON Schema of the whole configuration file."""
    generated = Settings.model_json_schema(schema_generator=_Generator)
    defs: dict[str, Any] = generated["$defs"]
    if Settings.model_config.get("coerce_numbers_to_str"):
        _numbers_as_strings(generated)

    _adjust_sinks(defs)
    return {
        "$schema": SCHEMA_DIALECT,
        "title": "storm-notifier configuration",
        "description": "One YAML file: --config PATH, else $NOTIFIER_CONFIG, else"
        " config/notifier.yaml. ${VAR} and ${VAR:-default} are expanded from the environment.",
        **{k: v for k, v in generated.items() if k not in ("title", "description", "$defs")},
        "$defs": defs,
    }


def _adjust_sinks(defs: dict[str, Any]) -> None:
    """One secret or a list; ``type`` selects the model; other types are a plugin's."""
    webhook = defs[_SINK_MODELS["webhook"]]["properties"]
    labels = {k: webhook["secret"].pop(k) for k in ("title", "description")}
    webhook["secret"] = {"anyOf": [webhook["secret"]["items"], webhook["secret"]], **labels}
    for model in _SINK_MODELS.values():
        required = defs[model].setdefault("required", [])
        if "type" not in required:
            required.insert(0, "type")
    plugin = defs[_PLUGIN_MODEL]
    plugin["properties"]["type"] = {
        "type": "string",
        "not": {"enum": list(BUILTIN_SINKS)},
        "description": "a sink type a package registers (entry-point group notifier.sinks)",
        "title": "Type",
    }
    plugin["required"] = ["name", "type"]
    plugin["description"] = (
        "A third-party sink: its own keys are validated at start-up by the settings model"
        " of the installed plugin."
    )


def _numbers_as_strings(node: Any) -> None:
    """Strings without a pattern also take numbers, as the models do (coerce_numbers_to_str)."""
    if isinstance(node, list):
        for item in node:
            _numbers_as_strings(item)
        return
    if not isinstance(node, dict):
        return
    if node.get("type") == "string" and not {"pattern", "enum", "const"} & node.keys():
        node["type"] = ["string", "number"]
    for key, value in node.items():
        if key not in ("default", "examples", "const", "enum"):
            _numbers_as_strings(value)


def register(commands: Commands, parents: list[argparse.ArgumentParser]) -> None:
    """``notifier config-schema``."""
    parser = commands.add_parser(
        "config-schema",
        parents=parents,
        help="print the JSON Schema of the configuration (for editors); reads no config file",
    )
    parser.set_defaults(handler=main)


def main(_args: argparse.Namespace) -> int:
    """Print the schema; reads no configuration."""
    print(json.dumps(config_schema(), indent=2))
    return EXIT_OK
