"""Webhook sink: signed CloudEvents over HTTP POST."""

from notifier.sinks.base import SinkType
from notifier.sinks.webhook.config import WebhookSinkSettings
from notifier.sinks.webhook.sink import WebhookSink, sign

__all__ = ["SINK_TYPE", "WebhookSink", "WebhookSinkSettings", "sign"]

SINK_TYPE = SinkType(WebhookSinkSettings, WebhookSink)
