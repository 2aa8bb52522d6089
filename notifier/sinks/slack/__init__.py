"""Slack incoming-webhook sink."""
