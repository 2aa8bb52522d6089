"""Slack sink: Block Kit digests to an incoming webhook."""

from notifier.sinks.base import SinkType
from notifier.sinks.slack.config import SlackSinkSettings
from notifier.sinks.slack.sink import SlackSink

__all__ = ["SINK_TYPE", "SlackSink", "SlackSinkSettings"]

SINK_TYPE = SinkType(SlackSinkSettings, SlackSink)
