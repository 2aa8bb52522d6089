"""storm-notifier: push events for the live audience of a Storm Streaming Server cluster."""

__version__ = "0.1.0"
