"""Settings of the ``slack`` sink: an incoming webhook, or a Slack app (``token`` + ``channel``).

Exactly one of ``webhook_url`` (Block Kit digests, SPEC 5) and ``token`` (app mode: incidents
edited in place, SPEC 5.1) is set; app mode needs ``channel`` too.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, SecretStr, model_validator

from notifier._model import PositiveSeconds, Seconds
from notifier.sinks.settings import DeliveryNeeds, HttpUrlSecret, SinkBaseSettings
from notifier.unset import is_unset

__all__ = ["DEFAULT_API_URL", "SlackSinkSettings"]

DEFAULT_API_URL = "https://slack.com/api/"


def _check_api_url(value: str) -> str:
    if not value.startswith(("http://", "https://")) or len(value) < len("http://x"):
        raise ValueError("must be an http:// or https:// URL")
    return value if value.endswith("/") else value + "/"


def _check_token(value: SecretStr) -> SecretStr:
    if is_unset(value):  # a ${VAR} the command does not need (notifier.unset)
        return value
    token = value.get_secret_value()
    if not token.strip() or any(char.isspace() for char in token):
        raise ValueError("must be a Slack token (xoxb-...) without spaces")
    return value


ApiUrl = Annotated[str, AfterValidator(_check_api_url)]
SlackToken = Annotated[SecretStr, AfterValidator(_check_token)]


class SlackSinkSettings(SinkBaseSettings):
    """Posts Block Kit messages to Slack: to an incoming webhook (``webhook_url``), or as a
    Slack app (``token`` + ``channel``, see docs/slack.md) that keeps one message per incident
    and edits it in place. Exactly one of the two."""

    type: Literal["slack"] = "slack"
    skip_initial: bool = Field(
        default=True,
        description="acknowledge events with data.initial without posting them: a first start"
        " does not post everyone already watching",
    )
    webhook_url: HttpUrlSecret | None = Field(
        default=None,
        description="Slack incoming-webhook URL (secret); or token + channel, not both",
    )
    token: SlackToken | None = Field(
        default=None,
        description="Slack app mode: the bot token, xoxb-... with chat:write (secret)",
    )
    channel: str | None = Field(
        default=None,
        min_length=1,
        max_length=80,
        description="Slack app mode: the channel ID (C0123456789) the bot was invited to",
    )
    api_url: ApiUrl = Field(
        default=DEFAULT_API_URL, description="Slack app mode: the Web API base URL (for tests)"
    )
    group_wait: Seconds = Field(
        default=10.0,
        description="events of one (cluster, streamKey) within this become one message",
    )
    timeout: PositiveSeconds = Field(default=15.0, description="one request, answer included")

    @model_validator(mode="after")
    def _one_mode(self) -> SlackSinkSettings:
        if (self.webhook_url is None) == (self.token is None):
            raise ValueError(
                "set exactly one of webhook_url (incoming webhook) or token + channel (Slack app)"
            )
        if self.token is not None and self.channel is None:
            raise ValueError("token needs channel: the channel ID the Slack app posts to")
        if self.webhook_url is not None and self.channel is not None:
            raise ValueError("channel goes with token (Slack app); a webhook_url has its own")
        if self.partitions != 1:
            raise ValueError(
                "partitions must be 1 for a Slack sink: Slack takes about one message a second"
                " per channel, and a stream's events are grouped into one message"
            )
        return self

    @property
    def app_mode(self) -> bool:
        """True for a Slack app (``token`` + ``channel``), False for an incoming webhook."""
        return self.token is not None

    def delivery_needs(self) -> DeliveryNeeds:
        """One delivery at a time (Slack paces each channel). One webhook message takes its
        timeout plus a wait; an app delivery starts Web API calls for up to ``timeout``
        (``app.SlackAppSink``), the last of which may take a ``timeout`` more."""
        calls = 2 if self.app_mode else 1
        return DeliveryNeeds(1, calls * self.timeout + self.group_wait + 5.0)
