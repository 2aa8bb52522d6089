"""Webhook sink: signed CloudEvents over HTTP POST."""

from notifier.sinks.webhook.config import WebhookSinkSettings
from notifier.sinks.webhook.sink import WebhookSink, sign

__all__ = ["WebhookSink", "WebhookSinkSettings", "sign"]
