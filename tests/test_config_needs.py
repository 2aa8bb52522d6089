"""Loading for a command that does not use every secret: unset ${VAR}s it does not need."""

from __future__ import annotations

import pytest

from notifier.config import Needs, Settings, settings_from_text
from notifier.errors import ConfigError
from notifier.sinks.slack import SlackSinkSettings
from notifier.sinks.webhook import WebhookSinkSettings
from notifier.unset import UnsetSecret

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
TEXT = """
clusters:
  - name: eu-1
    base_url: https://storm.example.com
    auth: {username: '${STORM_USER}', password: '${STORM_PASSWORD}', api_key: '${STORM_KEY}'}
  - name: us-1
    base_url: https://storm-us.example.com
    auth: {token: '${STORM_TOKEN}'}
sinks:
  - name: hooks
    type: webhook
    url: '${WEBHOOK_URL}'
    secret: ['${WEBHOOK_SECRET}']
    headers: {X-Key: '${HOOK_KEY}'}
  - name: ops
    type: slack
    token: '${SLACK_BOT_TOKEN}'
    channel: '${SLACK_CHANNEL}'
server: {listen: '0.0.0.0:9464', auth_token: '${NOTIFIER_TOKEN}'}
"""


def load(needs: Needs, env: dict[str, str] | None = None) -> Settings:
    return settings_from_text(TEXT, env or {}, source="n.yaml", needs=needs)


def test_every_secret_is_needed_by_default() -> None:
    """Without a statement of needs, an unset variable is the error it always was."""
    with pytest.raises(ConfigError, match=r"^n\.yaml: clusters\[0\]\.auth\.username: .*STORM_USER"):
        settings_from_text(TEXT, {}, source="n.yaml")


def test_a_redis_only_command_loads_without_any_secret() -> None:
    """tail, dlq list and status load with no Storm, sink or server secret in the environment."""
    settings = load(Needs.redis_only())
    eu, us = settings.clusters
    assert eu.auth.uses_login
    assert isinstance(eu.auth.password, UnsetSecret)
    assert isinstance(eu.auth.api_key, UnsetSecret)
    assert isinstance(us.auth.token, UnsetSecret)
    hooks, ops = settings.sinks
    assert isinstance(hooks, WebhookSinkSettings)
    assert isinstance(hooks.url, UnsetSecret)
    assert isinstance(hooks.secret[0], UnsetSecret)
    assert isinstance(hooks.headers["X-Key"], UnsetSecret)
    assert isinstance(ops, SlackSinkSettings)
    assert isinstance(ops.token, UnsetSecret)
    assert isinstance(settings.server.auth_token, UnsetSecret)
    assert "**********" in repr(settings)


def test_an_unset_secret_fails_clearly_when_read() -> None:
    """Reading a placeholder raises ConfigError naming the file, the key and the variable."""
    settings = load(Needs.redis_only())
    password = settings.clusters[0].auth.password
    assert password is not None
    with pytest.raises(ConfigError) as info:
        password.get_secret_value()
    assert str(info.value) == (
        "n.yaml: clusters[0].auth.password: environment variable STORM_PASSWORD is not set"
        " (this command needs it)"
    )
    hooks = settings.sinks[0]
    assert isinstance(hooks, WebhookSinkSettings)
    with pytest.raises(ConfigError, match=r"sinks\[0\]\.secret\[0\]: .* WEBHOOK_SECRET is not"):
        hooks.secret[0].get_secret_value()


def test_a_command_that_delivers_needs_that_sinks_secrets_only() -> None:
    """replay --sink hooks needs the hooks secrets, not Slack's or Storm's."""
    env = {"WEBHOOK_URL": "https://r.example/h", "WEBHOOK_SECRET": SECRET, "HOOK_KEY": "k"}
    settings = load(Needs.sink("hooks"), env)
    hooks, ops = settings.sinks
    assert isinstance(hooks, WebhookSinkSettings)
    assert hooks.url.get_secret_value() == "https://r.example/h"
    assert isinstance(ops, SlackSinkSettings)
    assert isinstance(ops.token, UnsetSecret)
    del env["WEBHOOK_SECRET"]
    with pytest.raises(ConfigError, match=r"sinks\[0\]\.secret\[0\]: .*WEBHOOK_SECRET is not set"):
        load(Needs.sink("hooks"), env)


def test_a_storm_command_needs_the_storm_secrets_only() -> None:
    """snapshot needs the cluster credentials but no sink's."""
    with pytest.raises(ConfigError, match="STORM_USER is not set"):
        load(Needs.storm_only())
    env = {"STORM_USER": "u", "STORM_PASSWORD": "p", "STORM_KEY": "k", "STORM_TOKEN": "t"}
    settings = load(Needs.storm_only(), env)
    password = settings.clusters[0].auth.password
    assert password is not None
    assert password.get_secret_value() == "p"
    assert isinstance(settings.sinks[1], SlackSinkSettings)
    assert isinstance(settings.sinks[1].token, UnsetSecret)


def test_non_secret_keys_keep_their_text_and_an_override_wins() -> None:
    """An unneeded plain key keeps the text as written; a NOTIFIER_* override is a real value."""
    env = {"NOTIFIER_CLUSTERS__EU_1__AUTH__PASSWORD": "from-env"}
    settings = load(Needs.redis_only(), env)
    auth = settings.clusters[0].auth
    assert auth.username == "${STORM_USER}"
    assert auth.password is not None
    assert auth.password.get_secret_value() == "from-env"
    ops = settings.sinks[1]
    assert isinstance(ops, SlackSinkSettings)
    assert ops.channel == "${SLACK_CHANNEL}"


def test_variables_outside_secret_sections_are_always_needed() -> None:
    """An unset variable elsewhere (Redis, detection) is an error for every command."""
    text = TEXT + "redis: {url: '${REDIS_URL}'}\n"
    with pytest.raises(ConfigError, match=r"redis\.url: environment variable REDIS_URL is not"):
        settings_from_text(text, {}, source="n.yaml", needs=Needs.redis_only())
