"""Configuration: YAML, ${VAR} expansion, NOTIFIER_* overrides, validation, masking."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from notifier.config import Settings, load_settings, resolve_config_path, settings_from_text
from notifier.durations import format_duration, parse_duration
from notifier.errors import ConfigError
from notifier.sinks.slack import SlackSinkSettings
from notifier.sinks.stdout import StdoutSinkSettings
from notifier.sinks.webhook import WebhookSinkSettings

ROOT = Path(__file__).resolve().parent.parent
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MINIMAL = """
clusters:
  - name: eu-1
    base_url: https://storm.example.com/
    auth:
      token: tok-s3cr3t
"""


def load(text: str, env: dict[str, str] | None = None) -> Settings:
    return settings_from_text(text, env or {}, source="test.yaml")


def error_of(text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(text, env)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_minimal_config_gets_documented_defaults() -> None:
    """A cluster with a token is enough; every other key has the SPEC default."""
    settings = load(MINIMAL)
    cluster = settings.clusters[0]
    assert cluster.base_url == "https://storm.example.com"
    assert cluster.poll_interval == 5.0
    assert (cluster.page_size, cluster.concurrency, cluster.timeout) == (100, 4, 10.0)
    assert settings.redis.url.get_secret_value() == "redis://127.0.0.1:6379/0"
    assert settings.redis.key_prefix == "notifier"
    assert settings.detection.disconnect_after_missed_polls == 2
    assert settings.detection.health.drop_below == 50
    assert settings.streams.maxlen == 1_000_000
    assert settings.server.listen == "127.0.0.1:9464"
    assert (settings.logging.format, settings.logging.level) == ("json", "info")


def test_settings_are_frozen() -> None:
    """Validated settings cannot be changed after start-up."""
    settings = load(MINIMAL)
    with pytest.raises(ValueError, match="frozen"):
        settings.clusters[0].poll_interval = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("5s", 5.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("3", 3.0),
        (7, 7.0),
        (0.25, 0.25),
        (" 1.5s ", 1.5),
    ],
)
def test_durations_parse(text: object, seconds: float) -> None:
    """Durations are written 500ms, 5s, 2m, 1h; a bare number is seconds."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5 minutes", "-1s", "s", "", True, None, "1e3s", "inf"])
def test_bad_durations_are_rejected(text: object) -> None:
    """Anything else is a ValueError with a hint."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_format_duration_round_trips() -> None:
    """Durations print the way they are written, in the largest unit that divides them."""
    seconds = (0, 0.5, 5, 120, 3600, 90, 86400, 172800, 90000, 1.5, 123456.789)
    assert [format_duration(s) for s in seconds] == [
        "0s",
        "500ms",
        "5s",
        "2m",
        "1h",
        "90s",
        "1d",
        "2d",
        "25h",
        "1.5s",
        "123456.789s",
    ]


@given(st.floats(min_value=0, max_value=1e12, allow_nan=False))
def test_every_formatted_duration_parses_back(seconds: float) -> None:
    """What check-config prints is a duration the config reads back as the same seconds."""
    back = parse_duration(format_duration(seconds))
    assert math.isclose(back, seconds, rel_tol=1e-9, abs_tol=1e-12)


def test_example_config_is_valid_and_documents_every_key() -> None:
    """config/notifier.example.yaml loads, and names every key of every settings model."""
    env = {
        "STORM_TOKEN": "t",
        "WEBHOOK_SECRET": SECRET,
        "SLACK_WEBHOOK_URL": "https://h/x",
        "SLACK_BOT_TOKEN": "xoxb-1-2-abc",
    }
    path = ROOT / "config" / "notifier.example.yaml"
    settings = load_settings(path, env)
    assert {s.type for s in settings.sinks} == {"webhook", "slack", "stdout"}
    text = path.read_text()
    documented = set(re.findall(r"^\s*(?:- )?([a-z_]+):", text, flags=re.MULTILINE))
    documented |= set(re.findall(r"[{,]\s*([a-z_]+):", text))
    missing = sorted(_all_keys(Settings) - documented)
    for model in (WebhookSinkSettings, SlackSinkSettings, StdoutSinkSettings):
        missing += sorted(_all_keys(model) - documented)
    assert missing == []


def _all_keys(model: type[BaseModel]) -> set[str]:
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        keys.add(name)
        annotation: Any = field.annotation
        for candidate in (annotation, *getattr(annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                keys |= _all_keys(candidate)
    return keys


def test_default_config_points_at_the_simulator() -> None:
    """config/notifier.yaml works with no environment at all (the demo's config)."""
    settings = load_settings(ROOT / "config" / "notifier.yaml", {})
    assert settings.clusters[0].base_url == "http://127.0.0.1:8480"
    assert settings.clusters[0].auth.uses_login


def test_env_expansion_with_and_without_defaults() -> None:
    """${VAR} takes the environment, ${VAR:-default} falls back, $${ stays literal."""
    text = MINIMAL.replace("tok-s3cr3t", "${TOKEN}") + (
        "    filters: {search: '${SEARCH:-live}'}\n"
        "redis: {key_prefix: '${PREFIX:-np}', url: 'redis://h:1/0'}\n"
        "logging: {level: '${LEVEL:-debug}'}\n"
    )
    settings = load(text, {"TOKEN": "abc", "LEVEL": ""})
    assert settings.clusters[0].auth.token is not None
    assert settings.clusters[0].auth.token.get_secret_value() == "abc"
    assert settings.clusters[0].filters.search == "live"
    assert settings.redis.key_prefix == "np"
    assert settings.logging.level == "debug"  # empty counts as unset for :-
    literal = load(MINIMAL + "    filters: {search: '$${NOT_EXPANDED}'}\n")
    assert literal.clusters[0].filters.search == "${NOT_EXPANDED}"


def test_missing_env_variable_names_the_key_and_variable() -> None:
    """An unset ${VAR} without a default is an error naming both."""
    message = error_of(MINIMAL.replace("tok-s3cr3t", "${STORM_TOKEN}"))
    assert message.startswith("test.yaml: clusters[0].auth.token: ")
    assert "STORM_TOKEN is not set" in message


def test_env_overrides_by_index_by_name_and_nested() -> None:
    """NOTIFIER_<SECTION>__<KEY> overrides keys; list items by index or by name."""
    env = {
        "NOTIFIER_REDIS__URL": "redis://10.0.0.5:6380/2",
        "NOTIFIER_CLUSTERS__0__PAGE_SIZE": "500",
        "NOTIFIER_CLUSTERS__EU_1__POLL_INTERVAL": "2s",
        "NOTIFIER_DETECTION__HEALTH__DROP_BELOW": "40",
        "NOTIFIER_CLUSTERS__EU_1__FILTERS__HARNESS_TYPES": "[STORM_HLS_VIEWER, RTMP_VIEWER]",
        "NOTIFIER_LOGGING__FORMAT": "console",
        "NOTIFIER_CONFIG": "ignored-here",
        "OTHER__THING": "x",
    }
    settings = load(MINIMAL, env)
    cluster = settings.clusters[0]
    assert settings.redis.url.get_secret_value() == "redis://10.0.0.5:6380/2"
    assert (cluster.page_size, cluster.poll_interval) == (500, 2.0)
    assert cluster.filters.harness_types == ("STORM_HLS_VIEWER", "RTMP_VIEWER")
    assert settings.detection.health.drop_below == 40
    assert settings.logging.format == "console"


def test_bad_env_override_names_the_variable() -> None:
    """A bad value from the environment says which variable it came from."""
    message = error_of(MINIMAL, {"NOTIFIER_CLUSTERS__0__TIMEOUT": "soon"})
    assert "clusters[0].timeout" in message
    assert "NOTIFIER_CLUSTERS__0__TIMEOUT" in message
    message = error_of(MINIMAL, {"NOTIFIER_CLUSTERS__US_2__TIMEOUT": "1s"})
    assert "NOTIFIER_CLUSTERS__US_2__TIMEOUT" in message
    assert "no item 'us_2'" in message
    message = error_of(MINIMAL, {"NOTIFIER_REDIS__URLL": "redis://x"})
    assert message == "NOTIFIER_REDIS__URLL: unknown key redis.urll (did you mean `url`?)"


def test_an_unknown_section_from_the_environment_blames_the_variable() -> None:
    """A misspelt section in a variable name is that variable's fault, not the file's."""
    message = error_of(MINIMAL, {"NOTIFIER_LOGGINGG__LEVEL": "debug"})
    assert message == "NOTIFIER_LOGGINGG__LEVEL: unknown key loggingg (did you mean `logging`?)"
    both = error_of(MINIMAL + "    pol_interval: 5s\n", {"NOTIFIER_SERVER__LISTN": "x"})
    assert both == (
        "test.yaml: clusters[0].pol_interval: unknown key (did you mean `poll_interval`?);"
        " NOTIFIER_SERVER__LISTN: unknown key server.listn (did you mean `listen`?)"
    )


def test_unknown_key_names_file_and_key() -> None:
    """Typos are errors that name the file and the full key."""
    message = error_of(MINIMAL + "    pol_interval: 5s\n")
    assert (
        message
        == "test.yaml: clusters[0].pol_interval: unknown key (did you mean `poll_interval`?)"
    )
    assert error_of("colour: blue\n" + MINIMAL) == "test.yaml: colour: unknown key"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("detecton: {}\n", "detecton: unknown key (did you mean `detection`?)"),
        ("    auth2: {}\n", "clusters[0].auth2: unknown key (did you mean `auth`?)"),
        ("detection: {helth: {}}\n", "detection.helth: unknown key (did you mean `health`?)"),
        (
            "sinks: [{name: a, type: slack, webhook_url: 'https://h/x', group_wiat: 1s}]\n",
            "sinks[0].group_wiat: unknown key (did you mean `group_wait`?)",
        ),
        (
            "sinks: [{name: a, type: stdout, formt: text}]\n",
            "sinks[0].formt: unknown key (did you mean `format`?)",
        ),
    ],
)
def test_unknown_keys_suggest_the_closest_valid_one(extra: str, expected: str) -> None:
    """An unknown key anywhere, sink items included, comes with the closest valid key."""
    assert error_of(MINIMAL + extra) == f"test.yaml: {expected}"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("    poll_interval: soon\n", "clusters[0].poll_interval: expected a duration"),
        ("    page_size: 0\n", "clusters[0].page_size: input should be greater than or equal to 1"),
        ("    name2: x\n", "clusters[0].name2: unknown key"),
        ("    filters: {harness_types: [WEB_VIEWER]}\n", "clusters[0].filters.harness_types[0]"),
        (
            "detection: {health: {drop_below: 80, recover_at: 60}}\n",
            "detection.health: recover_at must be at least drop_below",
        ),
        ("server: {listen: 'nowhere'}\n", "server.listen: must be host:port"),
        ("logging: {format: xml}\n", "logging.format: input should be 'json' or 'console'"),
        ("redis: {url: 'http://x'}\n", "redis.url: must start with redis://"),
        ("redis: {key_prefix: 'a{b}'}\n", "redis.key_prefix: string should match pattern"),
    ],
)
def test_invalid_values_name_the_key(extra: str, expected: str) -> None:
    """Each invalid value produces one line that names the key and the problem."""
    assert expected in error_of(MINIMAL + extra)


def test_cluster_name_and_url_are_checked() -> None:
    """Names follow [a-z0-9_-]{1,40}; base_url is http(s) without credentials."""
    assert "clusters[0].name: string should match" in error_of(MINIMAL.replace("eu-1", "EU 1"))
    bad_url = MINIMAL.replace("https://storm.example.com/", "ftp://storm")
    assert "clusters[0].base_url: must be an http:// or https:// URL" in error_of(bad_url)
    creds = MINIMAL.replace("https://storm.example.com/", "https://u:p@storm")
    assert "must not hold credentials" in error_of(creds)


def test_auth_is_token_or_login() -> None:
    """Auth takes a token or username+password, not both, not half."""
    both = MINIMAL + "      username: admin\n      password: pw\n"
    assert "either token, or username and password" in error_of(both)
    half = MINIMAL.replace("token: tok-s3cr3t", "username: admin")
    assert "username and password go together" in error_of(half)
    none = MINIMAL.replace("token: tok-s3cr3t", "api_key: k")
    assert "set token, or username and password" in error_of(none)
    login = load(MINIMAL.replace("token: tok-s3cr3t", "username: admin\n      password: 1234"))
    assert login.clusters[0].auth.uses_login
    assert login.clusters[0].auth.password is not None
    assert login.clusters[0].auth.password.get_secret_value() == "1234"


def test_clusters_are_required_and_names_unique() -> None:
    """At least one cluster, and cluster and sink names are unique."""
    assert "clusters: required key is missing" in error_of("redis: {}\n")
    twice = MINIMAL + MINIMAL.split("clusters:\n", 1)[1]
    assert "cluster names must be unique: eu-1" in error_of(twice)


def test_sinks_are_selected_by_type() -> None:
    """Sinks validate by their type; an unknown type lists the built-in ones."""
    text = MINIMAL + (
        "sinks:\n"
        f"  - {{name: hooks, type: webhook, url: 'https://r.example/h', secret: {SECRET}}}\n"
        "  - {name: ops, type: slack, webhook_url: 'https://hooks.slack.com/x', group_wait: 3s}\n"
        "  - {name: out, type: stdout, events: [viewer.connected]}\n"
    )
    settings = load(text)
    hooks, ops, out = settings.sinks
    assert isinstance(hooks, WebhookSinkSettings)
    assert len(hooks.secret) == 1
    assert hooks.retry.schedule[:3] == (0.0, 5.0, 300.0)
    assert isinstance(ops, SlackSinkSettings)
    assert ops.group_wait == 3.0
    assert isinstance(out, StdoutSinkSettings)
    assert out.events == ("viewer.connected",)
    unknown = MINIMAL + "sinks:\n  - {name: x, type: pager}\n"
    assert error_of(unknown) == (
        "test.yaml: sinks[0]: unknown sink type (built in: webhook, slack, stdout)"
    )
    missing = MINIMAL + "sinks:\n  - {name: x, type: webhook, secret: " + SECRET + "}\n"
    assert error_of(missing) == "test.yaml: sinks[0].url: required key is missing"
    empty = MINIMAL + "sinks:\n  - {name: x, type: stdout, events: []}\n"
    assert "sinks[0].events: an empty list delivers nothing" in error_of(empty)
    bad_event = MINIMAL + "sinks:\n  - {name: x, type: stdout, events: [viewer.joined]}\n"
    assert "sinks[0].events[0]" in error_of(bad_event)


def test_webhook_secrets_accept_a_rotation_list() -> None:
    """A webhook takes one secret or a list of them, each whsec_ + base64."""
    text = MINIMAL + (
        "sinks:\n  - name: hooks\n    type: webhook\n    url: https://r.example/h\n"
        f"    secret: [{SECRET}, whsec_c2Vjb25kLXNlY3JldC1rZXktMzItYnl0ZXMh]\n"
    )
    settings = load(text)
    hook = settings.sinks[0]
    assert isinstance(hook, WebhookSinkSettings)
    assert len(hook.secret) == 2


def test_no_secret_is_ever_echoed_in_errors() -> None:
    """Invalid secrets produce errors that do not contain them."""
    secrets = ["hunter2-not-base64!", "https://hooks.slack.com/services/T0/B0/XYZ", "tok-s3cr3t"]
    text = MINIMAL + (
        "    verify_tls: maybe\n"
        "sinks:\n"
        f"  - {{name: a, type: webhook, url: 'https://r.example/h', secret: '{secrets[0]}'}}\n"
        f"  - {{name: b, type: slack, webhook_url: 'ftp{secrets[1][5:]}'}}\n"
    )
    message = error_of(text)
    assert "sinks[0].secret[0]" in message
    for secret in [*secrets, "ftp://hooks.slack.com", "hunter2"]:
        assert secret not in message
    assert "tok-s3cr3t" not in repr(load(MINIMAL))


def test_redis_display_url_masks_the_password() -> None:
    """The Redis URL's password is masked for display."""
    settings = load(MINIMAL + "redis: {url: 'redis://app:pa55@cache:6379/1'}\n")
    assert settings.redis.display_url() == "redis://app:***@cache:6379/1"
    settings = load(MINIMAL + "redis: {url: 'rediss://:pa55@cache:6379/1'}\n")
    assert settings.redis.display_url() == "rediss://:***@cache:6379/1"


def test_files_resolve_and_fail_clearly(tmp_path: Path) -> None:
    """--config, else NOTIFIER_CONFIG, else config/notifier.yaml; bad files say what is wrong."""
    assert resolve_config_path("a.yaml", {"NOTIFIER_CONFIG": "b.yaml"}) == Path("a.yaml")
    assert resolve_config_path(None, {"NOTIFIER_CONFIG": "b.yaml"}) == Path("b.yaml")
    assert resolve_config_path(None, {}) == Path("config/notifier.yaml")
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found"):
        load_settings(missing, {})
    broken = tmp_path / "broken.yaml"
    broken.write_text("clusters:\n  - name: a\n   base_url: x\n")
    with pytest.raises(ConfigError, match=r"broken.yaml:3: cannot parse YAML"):
        load_settings(broken, {})
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_settings(scalar, {})
    good = tmp_path / "good.yaml"
    good.write_text(MINIMAL)
    assert load_settings(None, {"NOTIFIER_CONFIG": str(good)}).clusters[0].name == "eu-1"


def test_settings_cluster_lookup() -> None:
    """Settings.cluster finds a cluster by name or names the choices."""
    settings = load(MINIMAL)
    assert settings.cluster("eu-1").name == "eu-1"
    with pytest.raises(ConfigError, match=r"no cluster named 'us' \(configured: eu-1\)"):
        settings.cluster("us")


def test_display_url_masks_a_password_that_contains_at() -> None:
    """A password with '@' in it is masked whole (redis-py splits at the last '@')."""
    settings = load(MINIMAL + "redis: {url: 'redis://user:s3cr@tPass@cache:6379/0'}\n")
    assert settings.redis.display_url() == "redis://user:***@cache:6379/0"
    assert load(MINIMAL).redis.display_url() == "redis://127.0.0.1:6379/0"
