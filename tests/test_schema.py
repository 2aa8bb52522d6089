"""`notifier config-schema`, the generated configuration reference, and the container config."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

from notifier.commands.schema import SCHEMA_DIALECT, config_schema
from notifier.config import load_settings, settings_from_text
from notifier.errors import ConfigError
from tests.conftest import bare_env

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "notifier.example.yaml"
COMPOSE_CONFIG = ROOT / "config" / "compose.yaml"
ENV = {
    "STORM_TOKEN": "tok-123",
    "WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T000/B000/XXXX",
    "SLACK_BOT_TOKEN": "xoxb-1-2-abc",
}

Document = dict[str, Any]


def _expand(text: str, env: dict[str, str]) -> str:
    return re.sub(
        r"\$\{(\w+)(?::-([^}]*))?\}", lambda m: env.get(m.group(1), m.group(2) or ""), text
    )


def example() -> Document:
    """config/notifier.example.yaml as data, its ${VAR}s filled."""
    document: Document = yaml.safe_load(_expand(EXAMPLE.read_text(encoding="utf-8"), ENV))
    return document


def errors(document: Document) -> list[str]:
    """Every schema violation of ``document``, as "path: message", alternatives' included."""
    validator = Draft202012Validator(config_schema())
    found: list[str] = []
    pending = list(validator.iter_errors(document))
    while pending:
        error = pending.pop(0)
        found.append(f"{error.json_path}: {error.message}")
        pending += error.context or []
    return found


def loader_accepts(document: Document) -> bool:
    """Does the real loader take ``document``?"""
    try:
        settings_from_text(yaml.safe_dump(document), {}, source="test.yaml")
    except ConfigError:
        return False
    return True


def test_schema_is_valid_draft_2020_12() -> None:
    """The schema is itself valid JSON Schema 2020-12, with a dialect and a title."""
    schema = config_schema()
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == SCHEMA_DIALECT
    assert schema["title"] == "storm-notifier configuration"
    assert schema["additionalProperties"] is False
    assert json.loads(json.dumps(schema)) == schema


def test_example_config_validates() -> None:
    """config/notifier.example.yaml, with its variables filled, satisfies the schema."""
    document = example()
    assert errors(document) == []
    assert loader_accepts(document)


def _set(path: str, value: Any) -> Callable[[Document], None]:
    def change(document: Document) -> None:
        node: Any = document
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        for part in parents:
            node = node[part]
        node[last] = value

    return change


def _drop(path: str) -> Callable[[Document], None]:
    def change(document: Document) -> None:
        node: Any = document
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        for part in parents:
            node = node[part]
        del node[last]

    return change


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (_set("colour", "red"), "$"),
        (_set("redis.colour", "red"), "$.redis"),
        (_set("clusters.0.poll_intervall", "5s"), "$.clusters[0]"),
        (_set("clusters.0.auth.tokn", "x"), "$.clusters[0].auth"),
        (_set("sinks.0.urll", "https://x.example"), "$.sinks[0]"),
        (_set("clusters.0.page_size", "many"), "$.clusters[0].page_size"),
        (_set("clusters.0.page_size", 0), "$.clusters[0].page_size"),
        (_set("clusters.0.verify_tls", "maybe"), "$.clusters[0].verify_tls"),
        (_set("clusters.0.poll_interval", "soon"), "$.clusters[0].poll_interval"),
        (_set("clusters.0.poll_interval", [5]), "$.clusters[0].poll_interval"),
        (_set("clusters.0.name", "EU 1"), "$.clusters[0].name"),
        (_set("clusters", []), "$.clusters"),
        (_drop("clusters"), "$"),
        (_set("redis", "redis://x:6379/0"), "$.redis"),
        (_set("logging.format", "xml"), "$.logging.format"),
        (_set("sinks.0.events", ["viewer.left"]), "$.sinks[0]"),
        (_drop("sinks.0.type"), "$.sinks[0]"),
        (_set("sinks.1.group_wait", {"s": 1}), "$.sinks[1]"),
        (_set("sinks.2.type", 5), "$.sinks[2]"),
    ],
)
def test_unknown_keys_and_bad_types_fail(change: Callable[[Document], None], where: str) -> None:
    """An unknown key or a value of the wrong type fails the schema, as it fails the loader."""
    document = example()
    change(document)
    found = errors(document)
    assert found, "the schema accepted it"
    assert any(e.startswith(where) for e in found), found
    assert not loader_accepts(document)


@pytest.mark.parametrize(
    "change",
    [
        _set("clusters.0.poll_interval", 2.5),
        _set("clusters.0.poll_interval", "500ms"),
        _set("sinks.0.retry.schedule", [0, "5s", "1m", "2h"]),
        _set("sinks.0.secret", [ENV["WEBHOOK_SECRET"], "whsec_" + "A" * 32]),
        _set("sinks.0.filter.stream_keys", [123, "live-*"]),
        _set("clusters.0.auth", {"username": "admin", "password": 1234}),
        _set("sinks.0.events", None),
        _drop("sinks"),
    ],
)
def test_what_the_loader_takes_the_schema_takes(change: Callable[[Document], None]) -> None:
    """Durations as numbers or strings, one secret or several, numbers for strings: all valid."""
    document = example()
    change(document)
    assert errors(document) == []
    assert loader_accepts(document)


def test_plugin_sinks_are_open_but_builtins_are_closed() -> None:
    """A sink of another type may carry its own keys; a built-in type may not."""
    document = example()
    document["sinks"].append({"name": "pager", "type": "pagerduty", "routing_key": "abc"})
    assert errors(document) == []
    document["sinks"][-1]["type"] = "stdout"
    assert errors(document)
    document["sinks"][-1] = {"type": "pagerduty", "routing_key": "abc"}
    assert any("'name' is a required property" in e for e in errors(document))


def test_secret_defaults_are_shown_unmasked() -> None:
    """Defaults in the schema are real values (the default Redis URL), not "**********"."""
    schema = config_schema()
    assert schema["properties"]["redis"]["default"]["url"] == "redis://127.0.0.1:6379/0"
    assert "**********" not in json.dumps(schema)


def test_config_schema_command_prints_the_schema(tmp_path: Path) -> None:
    """`python -m notifier config-schema` exits 0 with the schema on stdout, reading no config."""
    env = bare_env(NOTIFIER_CONFIG=str(tmp_path / "missing.yaml"))
    result = subprocess.run(
        [sys.executable, "-m", "notifier", "config-schema"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == config_schema()
    assert result.stderr == ""


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_generate", ROOT / "docs" / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configuration_reference_is_up_to_date() -> None:
    """docs/configuration.md is what docs/generate.py writes from the models today."""
    expected: str = _generator().render()
    current = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert current == expected, (
        "docs/configuration.md is out of date: run .venv/bin/python docs/generate.py"
    )


def test_configuration_reference_names_every_key() -> None:
    """Every key of every settings model appears in docs/configuration.md, secrets marked."""
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    defs = config_schema()["$defs"]
    for name, definition in defs.items():
        for key in definition["properties"]:
            assert f"| `{key}` |" in text, f"{name}.{key}"
    for secret in ("url", "token", "password", "api_key", "secret", "headers", "webhook_url"):
        row = next(line for line in text.splitlines() if line.startswith(f"| `{secret}` |"))
        assert "**secret**" in row, row


def test_compose_config_loads() -> None:
    """config/compose.yaml is valid and points at the compose services."""
    settings = load_settings(COMPOSE_CONFIG, environ={})
    assert settings.redis.url.get_secret_value() == "redis://redis:6379/0"
    (cluster,) = settings.clusters
    assert cluster.base_url == "http://simulator:8480"
    assert cluster.auth.username == "admin"
    assert cluster.auth.password is not None
    assert cluster.auth.password.get_secret_value() == "admin"
    assert [s.type for s in settings.sinks] == ["stdout"]
    assert settings.server.listen == "0.0.0.0:9464"
    assert settings.logging.format == "console"
    document = yaml.safe_load(_expand(COMPOSE_CONFIG.read_text(encoding="utf-8"), {}))
    assert errors(document) == []


def test_compose_file_matches_its_config() -> None:
    """docker-compose.yml wires the three services the way config/compose.yaml expects."""
    compose: Document = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    services = compose["services"]
    assert set(services) == {"redis", "simulator", "notifier"}
    assert "--appendonly" in services["redis"]["command"]
    simulator, notifier = services["simulator"], services["notifier"]
    assert simulator["image"] == notifier["image"]
    command = simulator["command"]
    assert command[0] == "simulate"
    assert command[command.index("--port") + 1] == "8480"
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert notifier["command"] == ["run"]
    assert notifier["environment"]["NOTIFIER_CONFIG"] == "/app/config/compose.yaml"
    assert "./config:/app/config:ro" in notifier["volumes"]
    assert notifier["ports"] == ["9464:9464"]
    assert {k: v["condition"] for k, v in notifier["depends_on"].items()} == {
        "redis": "service_healthy",
        "simulator": "service_healthy",
    }
    for service in services.values():
        assert service["healthcheck"]["test"][0] == "CMD"
    assert "/healthz" in " ".join(notifier["healthcheck"]["test"])
