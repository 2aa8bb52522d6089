"""Settings of the ``slack`` sink."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from notifier._model import PositiveSeconds, Seconds
from notifier.sinks.settings import DeliveryNeeds, HttpUrlSecret, SinkBaseSettings

__all__ = ["SlackSinkSettings"]


class SlackSinkSettings(SinkBaseSettings):
    """Posts Block Kit digests to a Slack incoming webhook."""

    type: Literal["slack"] = "slack"
    webhook_url: HttpUrlSecret = Field(description="Slack incoming-webhook URL (secret)")
    group_wait: Seconds = Field(
        default=10.0,
        description="events of one (cluster, streamKey) within this become one message",
    )
    timeout: PositiveSeconds = Field(default=15.0, description="one request, answer included")

    def delivery_needs(self) -> DeliveryNeeds:
        """One message at a time (Slack paces each webhook); one takes its timeout plus a wait."""
        return DeliveryNeeds(1, self.timeout + self.group_wait + 5.0)
