"""Slack sink: Block Kit digests to an incoming webhook, or a Slack app that keeps one message
per incident and edits it in place (SPEC 5, 5.1)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from notifier.sinks.base import StatefulSinkType
from notifier.sinks.slack.app import SlackAppSink
from notifier.sinks.slack.config import SlackSinkSettings
from notifier.sinks.slack.sink import SlackSink

if TYPE_CHECKING:
    from notifier.sinks.base import Sink, SinkContext

__all__ = ["SINK_TYPE", "SlackAppSink", "SlackSink", "SlackSinkSettings", "create_slack_sink"]


def create_slack_sink(settings: SlackSinkSettings, context: SinkContext) -> Sink:
    """The sink its settings ask for: an app (``token``) or an incoming webhook."""
    if settings.app_mode:
        return SlackAppSink(settings, context)
    return SlackSink(settings)


SINK_TYPE = StatefulSinkType(SlackSinkSettings, create_slack_sink)
