"""Configuration: one YAML file plus the environment, validated once into frozen settings.

Each section's model lives beside the component it configures (``storm.settings``,
``detect.settings``, ``redis_client``, ``sinks``, ``endpoint``, ``logs``); this module composes
them into ``Settings`` and loads the file.

Resolution: ``--config PATH``, else ``$NOTIFIER_CONFIG``, else ``config/notifier.yaml``.
Inside the YAML, ``${VAR}`` and ``${VAR:-default}`` are expanded from the environment (``$${``
writes a literal ``${``). ``NOTIFIER_<SECTION>__<KEY>`` variables override keys; list items are
addressed by index or by name (``NOTIFIER_CLUSTERS__EU_1__POLL_INTERVAL=2s``). Errors name the
file and the key (or the variable the key came from), suggest the closest valid key for an
unknown one, and never echo a value.

A command states what it ``Needs``: an unset ``${VAR}`` in a section it does not use (the Storm
credentials for ``notifier tail``, a webhook secret for ``dlq list``) is no error; that key holds
an ``UnsetSecret`` (``notifier.unset``), which raises ``ConfigError`` if it is ever read.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import Field, ValidationError, model_validator

from notifier._model import Frozen
from notifier.config_errors import describe, format_loc
from notifier.config_needs import ALL_SECRETS, Deferred, Needs, Unresolved
from notifier.detect.settings import DetectionSettings, HealthSettings
from notifier.errors import ConfigError
from notifier.logs import LoggingSettings
from notifier.redis_client import RedisSettings
from notifier.server.settings import ServerSettings
from notifier.sinks.config import SinkSettings, validate_plugins
from notifier.storm.settings import ClusterAuth, ClusterFilters, ClusterSettings, HarnessType

if TYPE_CHECKING:
    from collections.abc import Mapping

    from notifier.config_needs import Loc

__all__ = [
    "ALL_SECRETS",
    "DEFAULT_CONFIG_PATH",
    "ClusterAuth",
    "ClusterFilters",
    "ClusterSettings",
    "DetectionSettings",
    "HarnessType",
    "HealthSettings",
    "LoggingSettings",
    "Needs",
    "RedisSettings",
    "ServerSettings",
    "Settings",
    "StreamSettings",
    "load_settings",
    "resolve_config_path",
]

DEFAULT_CONFIG_PATH = Path("config/notifier.yaml")
ENV_PREFIX = "NOTIFIER_"


class StreamSettings(Frozen):
    """The event streams in Redis."""

    maxlen: int = Field(default=1_000_000, ge=1000, description="approximate trim of each stream")


class Settings(Frozen):
    """The whole configuration (``docs/configuration.md``)."""

    redis: RedisSettings = RedisSettings()
    clusters: tuple[ClusterSettings, ...] = Field(min_length=1)
    detection: DetectionSettings = DetectionSettings()
    streams: StreamSettings = StreamSettings()
    sinks: tuple[SinkSettings, ...] = ()
    server: ServerSettings = ServerSettings()
    logging: LoggingSettings = LoggingSettings()

    @model_validator(mode="after")
    def _unique_names(self) -> Settings:
        for kind, names in (
            ("cluster", [c.name for c in self.clusters]),
            ("sink", [s.name for s in self.sinks]),
        ):
            if dupes := sorted({n for n in names if names.count(n) > 1}):
                raise ValueError(f"{kind} names must be unique: {', '.join(dupes)}")
        return self

    def cluster(self, name: str) -> ClusterSettings:
        """The cluster called ``name``; ``ConfigError`` naming the choices if there is none."""
        for cluster in self.clusters:
            if cluster.name == name:
                return cluster
        known = ", ".join(c.name for c in self.clusters)
        raise ConfigError(f"no cluster named {name!r} (configured: {known})")


# --- loading ---------------------------------------------------------------------------------


def resolve_config_path(path: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> Path:
    """``--config``, else ``$NOTIFIER_CONFIG``, else ``config/notifier.yaml``."""
    if path is not None:
        return Path(path)
    if env_path := environ.get("NOTIFIER_CONFIG"):
        return Path(env_path)
    return DEFAULT_CONFIG_PATH


def load_settings(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    needs: Needs = ALL_SECRETS,
) -> Settings:
    """Read, expand, override and validate the configuration; ``ConfigError`` on any problem.

    ``needs``: the secrets the caller uses (default: all); see ``Needs``.
    """
    env = dict(os.environ if environ is None else environ)
    source = resolve_config_path(path, env)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{source}: config file not found (use --config or NOTIFIER_CONFIG)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read the config file: {_reason(exc)}") from None
    return settings_from_text(text, env, source=str(source), needs=needs)


def settings_from_text(
    text: str,
    environ: Mapping[str, str],
    *,
    source: str,
    needs: Needs = ALL_SECRETS,
) -> Settings:
    """Validate a YAML document; ``source`` names it in errors."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"{source}{where}: cannot parse YAML: {problem}") from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    deferred = Deferred(needs, document, lambda loc: f"{source}: {format_loc(loc)}")
    expanded = _expand(document, environ, source, (), deferred)
    origins: dict[Loc, str] = {}
    _apply_overrides(expanded, environ, origins, source)
    try:
        settings = Settings.model_validate(expanded)
    except ValidationError as exc:
        raise ConfigError(describe(exc, source=source, origins=origins, root=Settings)) from None
    try:
        sinks = validate_plugins(settings.sinks)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    settings = settings.model_copy(update={"sinks": sinks})
    return deferred.seal(settings, overridden=origins)


_VAR = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(
    node: Any, environ: Mapping[str, str], source: str, loc: Loc, deferred: Deferred
) -> Any:
    if isinstance(node, dict):
        return {k: _expand(v, environ, source, (*loc, str(k)), deferred) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand(v, environ, source, (*loc, i), deferred) for i, v in enumerate(node)]
    if not isinstance(node, str) or "${" not in node:
        return node

    def substitute(match: re.Match[str]) -> str:
        escaped, name, default = match.groups()
        if escaped:
            return match.group(0)[1:]
        value = environ.get(name)
        if value:
            return value
        if default is not None:
            return default
        if value is not None:
            return value
        if deferred.allows(loc):
            raise Unresolved(name)
        raise ConfigError(
            f"{source}: {format_loc(loc)}: environment variable {name} is not set"
            " (write ${" + name + ":-default} for a default)"
        )

    try:
        return _VAR.sub(substitute, node)
    except Unresolved as unset:
        return deferred.stand_in(loc, node, unset.variable)


def _apply_overrides(
    document: dict[str, Any],
    environ: Mapping[str, str],
    origins: dict[Loc, str],
    source: str,
) -> None:
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX) or "__" not in var:
            continue
        parts = var[len(ENV_PREFIX) :].lower().split("__")
        if not all(parts):
            raise ConfigError(f"{var}: empty key in the variable name")
        loc = _set_path(document, parts, _env_value(environ[var]), var, source)
        origins[loc] = var


def _env_value(raw: str) -> Any:
    """Flow collections (``[a, b]``, ``{k: v}``) are YAML; everything else stays a string."""
    if raw.lstrip().startswith(("[", "{")):
        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError:
            return raw
    return raw


def _set_path(document: dict[str, Any], parts: list[str], value: Any, var: str, source: str) -> Loc:
    node: Any = document
    loc: list[str | int] = []
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, list):
            index = _list_index(node, part)
            if index is None:
                raise ConfigError(
                    f"{var}: {format_loc(tuple(loc))} has no item {part!r} in {source}"
                    " (use its index or its name)"
                )
            loc.append(index)
            if last:
                node[index] = value
            else:
                node = node[index]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"{var}: {format_loc(tuple(loc))} is not a section in {source}")
        loc.append(part)
        if last:
            node[part] = value
        else:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
    return tuple(loc)


def _list_index(items: list[Any], part: str) -> int | None:
    if part.isdigit():
        return int(part) if int(part) < len(items) else None
    for index, item in enumerate(items):
        name = item.get("name") if isinstance(item, dict) else None
        if isinstance(name, str) and name.replace("-", "_") == part.replace("-", "_"):
            return index
    return None


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or type(exc).__name__
