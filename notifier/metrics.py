"""Prometheus metrics of one process, in a registry of its own.

Pollers and sink workers update counters as they go; the gauges that describe Redis (how far
each sink lags behind its stream, how many dead letters wait) are read when /metrics is
scraped.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["Metrics"]

_POLL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_DELIVERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15)


class Metrics:
    """Every metric storm-notifier exports."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.polls = Counter(
            "notifier_polls",
            "Polls of a Storm cluster by outcome: complete, incomplete, committed, dropped, fenced",
            ["cluster", "outcome"],
            registry=r,
        )
        self.poll_duration = Histogram(
            "notifier_poll_duration_seconds",
            "Time of one poll cycle: fetch and decode every page, look up, detect, encode, commit",
            ["cluster"],
            buckets=_POLL_BUCKETS,
            registry=r,
        )
        self.poll_phase = Histogram(
            "notifier_poll_phase_seconds",
            "Time of each phase of a poll cycle (fetch, lookup, detect, commit)",
            ["cluster", "phase"],
            buckets=_POLL_BUCKETS,
            registry=r,
        )
        self.viewers = Gauge(
            "notifier_viewers",
            "Viewers tracked after the last committed poll",
            ["cluster"],
            registry=r,
        )
        self.events = Counter(
            "notifier_events",
            "Events appended to a cluster's stream",
            ["cluster", "type"],
            registry=r,
        )
        self.deliveries = Counter(
            "notifier_deliveries",
            "Delivery outcomes by sink (delivered, retried, dead_lettered, filtered)",
            ["sink", "outcome"],
            registry=r,
        )
        self.delivery_duration = Histogram(
            "notifier_delivery_duration_seconds",
            "Time of one delivery request",
            ["sink"],
            buckets=_DELIVERY_BUCKETS,
            registry=r,
        )
        self.sink_lag = Gauge(
            "notifier_sink_lag",
            "Stream entries a sink has not read yet",
            ["sink", "cluster"],
            registry=r,
        )
        self.dead_letters = Gauge(
            "notifier_dead_letters",
            "Entries in a sink's dead-letter stream",
            ["sink", "cluster"],
            registry=r,
        )
        self.sink_paused = Gauge(
            "notifier_sink_paused",
            "1 while a sink is paused (its endpoint is gone)",
            ["sink"],
            registry=r,
        )
        self.leading = Gauge(
            "notifier_leading",
            "1 while this process leads a cluster's polling",
            ["cluster"],
            registry=r,
        )
