"""The HTTP side of ``notifier run``: ``/metrics``, ``/healthz``, ``/readyz``."""
