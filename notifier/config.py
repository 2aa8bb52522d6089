"""Configuration: one YAML file plus the environment, validated once into frozen settings.

Resolution: ``--config PATH``, else ``$NOTIFIER_CONFIG``, else ``config/notifier.yaml``.
Inside the YAML, ``${VAR}`` and ``${VAR:-default}`` are expanded from the environment (``$${``
writes a literal ``${``). ``NOTIFIER_<SECTION>__<KEY>`` variables override keys; list items are
addressed by index or by name (``NOTIFIER_CLUSTERS__EU_1__POLL_INTERVAL=2s``). Errors name the
file and the key, and never echo a value.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator

from ._model import Frozen, Name, PositiveSeconds, Seconds
from .errors import ConfigError
from .sinks.config import BUILTIN_SINK_TYPES, SinkSettings
from .sinks.registry import plugin_types, validate_plugin

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pydantic_core import ErrorDetails

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "ClusterAuth",
    "ClusterFilters",
    "ClusterSettings",
    "DetectionSettings",
    "HarnessType",
    "HealthSettings",
    "LoggingSettings",
    "RedisSettings",
    "ServerSettings",
    "Settings",
    "StreamSettings",
    "load_settings",
    "resolve_config_path",
]

DEFAULT_CONFIG_PATH = Path("config/notifier.yaml")
ENV_PREFIX = "NOTIFIER_"

HarnessType = Literal[
    "STORM_MSE_VIEWER",
    "STORM_HLS_VIEWER",
    "CLUSTER_DATA_CLIENT",
    "GENERIC_HLS_VIEWER",
    "GENERIC_DASH_VIEWER",
    "RTMP_VIEWER",
    "RTMP_PUSH",
    "TRANSCODER",
    "FILE_WRITER",
]


class RedisSettings(Frozen):
    """Where events and state live."""

    url: SecretStr = Field(
        default=SecretStr("redis://127.0.0.1:6379/0"),
        description="redis:// or rediss:// (TLS) URL; secret because it may hold a password",
    )
    cluster: bool = Field(default=False, description="talk to a Redis Cluster")
    key_prefix: str = Field(default="notifier", pattern=r"^[A-Za-z0-9_.-]{1,64}$")

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    def display_url(self) -> str:
        """The URL with any password replaced by ``***`` (it may itself contain ``@``)."""
        url = self.url.get_secret_value()
        scheme, sep, rest = url.partition("://")
        userinfo, at, host = rest.rpartition("@")
        if not sep or not at:
            return url
        user = userinfo.partition(":")[0]
        return f"{scheme}://{user}:***@{host}"


class ClusterAuth(Frozen):
    """Either a static Bearer ``token``, or ``username`` + ``password`` for POST /api/auth/login."""

    token: SecretStr | None = Field(default=None, description="a static Bearer token (secret)")
    username: str | None = Field(default=None, description="for POST /api/auth/login")
    password: SecretStr | None = Field(default=None, description="for POST /api/auth/login")
    api_key: SecretStr | None = Field(default=None, description="sent as X-Api-Key when set")

    @model_validator(mode="after")
    def _one_method(self) -> ClusterAuth:
        login = self.username is not None or self.password is not None
        if self.token is not None and login:
            raise ValueError("set either token, or username and password, not both")
        if login and (not self.username or self.password is None):
            raise ValueError("username and password go together")
        if self.token is None and not login:
            raise ValueError("set token, or username and password")
        if self.token is not None and not self.token.get_secret_value():
            raise ValueError("token is empty (is its environment variable set?)")
        return self

    @property
    def uses_login(self) -> bool:
        """True when tokens come from POST /api/auth/login."""
        return self.token is None


class ClusterFilters(Frozen):
    """Query filters of GET /api/cluster/viewers."""

    harness_types: tuple[HarnessType, ...] = Field(
        default=(), description="empty: all; several: one request series per type"
    )
    system_clients: bool | None = Field(default=None, description="null: the server's default")
    search: str | None = None


class ClusterSettings(Frozen):
    """One Storm cluster, polled on its own."""

    name: Name
    base_url: str = Field(description="e.g. https://storm.example.com")
    auth: ClusterAuth
    poll_interval: PositiveSeconds = 5.0
    page_size: int = Field(default=100, ge=1, le=100_000, description="rowsPerPage asked for")
    concurrency: int = Field(default=4, ge=1, le=64, description="pages fetched at once")
    timeout: PositiveSeconds = Field(default=10.0, description="one HTTP request")
    poll_budget: PositiveSeconds = Field(
        default=30.0, description="time a poll may spend, retries included, before it is given up"
    )
    verify_tls: bool = True
    filters: ClusterFilters = ClusterFilters()

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        match = re.fullmatch(r"(https?)://([^/?#@\s]+)(/[^?#\s]*)?", value.strip())
        if match is None:
            if "@" in value:
                raise ValueError("must not hold credentials: put them under auth")
            raise ValueError("must be an http:// or https:// URL without query or fragment")
        return value.strip().rstrip("/")


class HealthSettings(Frozen):
    """Health-drop detection with hysteresis."""

    drop_below: float = Field(default=50, ge=0, le=100)
    recover_at: float = Field(default=70, ge=0, le=100)
    consecutive_polls: int = Field(default=2, ge=1, le=1000)

    @model_validator(mode="after")
    def _hysteresis(self) -> HealthSettings:
        if self.recover_at < self.drop_below:
            raise ValueError("recover_at must be at least drop_below")
        return self


class DetectionSettings(Frozen):
    """When a change becomes an event."""

    disconnect_after_missed_polls: int = Field(default=2, ge=1, le=1000)
    health: HealthSettings = HealthSettings()
    confirm_with_lookup: bool = Field(
        default=True,
        description="look tracked viewers missing from a poll up (batch endpoint) before they"
        " count as missed: offset paging over a live audience can skip a viewer",
    )
    leader_lease: PositiveSeconds = Field(
        default=5.0, description="lease of the poller leading a cluster; replicas take over after"
    )
    record_refresh: Seconds = Field(
        default=60.0,
        description="rewrite each tracked viewer's newest record in Redis at least this often"
        " (0: only when something else about it changes); after a crash or failover a"
        " disconnect carries a record at most this old",
    )


class StreamSettings(Frozen):
    """The event streams in Redis."""

    maxlen: int = Field(default=1_000_000, ge=1000, description="approximate trim of each stream")


class ServerSettings(Frozen):
    """The HTTP endpoint: /metrics, /healthz, /readyz."""

    listen: str = Field(default="127.0.0.1:9464", description="host:port")

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("must be host:port, e.g. 127.0.0.1:9464")
        return value


class LoggingSettings(Frozen):
    """Log output on standard error."""

    format: Literal["json", "console"] = Field(
        default="json", description="json: one object a line; console: for people"
    )
    level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value


class Settings(Frozen):
    """The whole configuration (SPEC section 2)."""

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
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read, expand, override and validate the configuration; ``ConfigError`` on any problem."""
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
    return settings_from_text(text, env, source=str(source))


def settings_from_text(text: str, environ: Mapping[str, str], *, source: str) -> Settings:
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
    expanded = _expand(document, environ, source, ())
    origins: dict[tuple[str | int, ...], str] = {}
    _apply_overrides(expanded, environ, origins, source)
    try:
        settings = Settings.model_validate(expanded)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source, origins)) from None
    try:
        sinks = tuple(validate_plugin(s, f"sinks[{i}]") for i, s in enumerate(settings.sinks))
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return settings.model_copy(update={"sinks": sinks})


_VAR = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(node: Any, environ: Mapping[str, str], source: str, loc: tuple[str | int, ...]) -> Any:
    if isinstance(node, dict):
        return {k: _expand(v, environ, source, (*loc, str(k))) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand(v, environ, source, (*loc, i)) for i, v in enumerate(node)]
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
        raise ConfigError(
            f"{source}: {_format_loc(loc)}: environment variable {name} is not set"
            " (write ${" + name + ":-default} for a default)"
        )

    return _VAR.sub(substitute, node)


def _apply_overrides(
    document: dict[str, Any],
    environ: Mapping[str, str],
    origins: dict[tuple[str | int, ...], str],
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


def _set_path(
    document: dict[str, Any], parts: list[str], value: Any, var: str, source: str
) -> tuple[str | int, ...]:
    node: Any = document
    loc: list[str | int] = []
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, list):
            index = _list_index(node, part)
            if index is None:
                raise ConfigError(
                    f"{var}: {_format_loc(tuple(loc))} has no item {part!r} in {source}"
                    " (use its index or its name)"
                )
            loc.append(index)
            if last:
                node[index] = value
            else:
                node = node[index]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"{var}: {_format_loc(tuple(loc))} is not a section in {source}")
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


_MESSAGES = {
    "extra_forbidden": "unknown key",
    "missing": "required key is missing",
}


def _unknown_sink_type() -> str:
    plugins = sorted(plugin_types())
    extra = f"; installed: {', '.join(plugins)}" if plugins else ""
    return f"unknown sink type (built in: {', '.join(BUILTIN_SINK_TYPES)}{extra})"


def _describe(
    exc: ValidationError, source: str, origins: Mapping[tuple[str | int, ...], str]
) -> str:
    errors = exc.errors(include_input=False, include_url=False)
    # "at least 1 item after validation" only echoes a failing item reported on its own.
    errors = [
        err
        for err in errors
        if err["type"] != "too_short"
        or not any(
            len(o["loc"]) > len(err["loc"]) and o["loc"][: len(err["loc"])] == err["loc"]
            for o in errors
        )
    ]
    parts = [_describe_one(err, origins) for err in errors[:3]]
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return f"{source}: " + "; ".join(parts) + more


def _describe_one(err: ErrorDetails, origins: Mapping[tuple[str | int, ...], str]) -> str:
    loc = _strip_tags(err["loc"])
    message = _unknown_sink_type() if err["type"] == "sink_type" else err["msg"]
    message = _MESSAGES.get(err["type"], message)
    message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    message = message[:1].lower() + message[1:]
    where = _format_loc(loc) or "(top level)"
    origin = next((var for key, var in origins.items() if loc[: len(key)] == key), None)
    return f"{where}: {message}" + (f" (from {origin})" if origin else "")


def _strip_tags(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    # A discriminated union adds the tag ("webhook") after the list index; users never wrote it.
    out: list[str | int] = []
    for i, part in enumerate(loc):
        if i >= 2 and loc[0] == "sinks" and i == 2 and part in (*BUILTIN_SINK_TYPES, "plugin"):
            continue
        out.append(part)
    return tuple(out)


def _format_loc(loc: tuple[str | int, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or type(exc).__name__
