"""Prometheus metrics of one process, in a registry of its own.

Pollers and sink workers update counters as they go; the gauges that describe Redis (how far
each sink lags behind its stream, how many dead letters wait) are read when /metrics is
scraped.

Counters and histograms are exported without their ``_created`` series (the Unix time each
labelled child was first used, which doubles the number of series and which Prometheus does
not need to compute rates): the metrics live in a private registry, and ``registry`` (what
``/metrics`` serves) sees them through a view that leaves those samples out. The library's
own switch for this (``disable_created_metrics()``) is process-wide state; the view is not.
"""

from __future__ import annotations

import copy
import itertools
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from prometheus_client.metrics_core import Metric

__all__ = ["TOP_STREAMS", "Metrics"]

_POLL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_DELIVERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15)
TOP_STREAMS = 20  # streams per cluster with a notifier_stream_viewers series: the largest


class _WithoutCreated:
    """A collector that yields another registry's metrics minus their ``_created`` samples."""

    def __init__(self, source: CollectorRegistry) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        """Each family of the source, as a copy without its ``_created`` samples."""
        for family in self._source.collect():
            created = family.name + "_created"
            trimmed = copy.copy(family)
            trimmed.samples = [sample for sample in family.samples if sample.name != created]
            yield trimmed

    def describe(self) -> Iterator[Metric]:
        """The same families: a registry this is added to can refuse clashing names."""
        return self.collect()


class Metrics:
    """Every metric storm-notifier exports.

    ``registry`` is what to expose (``generate_latest(metrics.registry)``): pass one in to
    expose these metrics beside others, else the instance makes its own.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = CollectorRegistry()  # the metrics themselves, exposed through the view at the end
        self.polls = Counter(
            "notifier_polls",
            "Polls of a Storm cluster by outcome: complete, incomplete, committed, dropped, fenced",
            ["cluster", "outcome"],
            registry=r,
        )
        self.poll_incomplete = Counter(
            "notifier_poll_incomplete",
            "Incomplete polls of a Storm cluster by reason (notifier.errors.STORM_ERROR_KINDS)",
            ["cluster", "reason"],
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
        self.backlog_polls = Gauge(
            "notifier_poll_backlog",
            "Polls detected and not written yet: Redis is unavailable (detection.redis_outage)",
            ["cluster"],
            registry=r,
        )
        self.backlog_events = Gauge(
            "notifier_poll_backlog_events",
            "Events of the polls waiting to be written (notifier_poll_backlog)",
            ["cluster"],
            registry=r,
        )
        self.backlog_dropped = Counter(
            "notifier_poll_backlog_dropped_events",
            "Events detected during a Redis outage and given up: a bound passed, another"
            " replica led meanwhile, or a stop came first",
            ["cluster"],
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
            "Stream entries a sink has not read yet (unread only: what it read and has not"
            " delivered is notifier_sink_waiting)",
            ["sink", "cluster"],
            registry=r,
        )
        self.sink_waiting = Gauge(
            "notifier_sink_waiting",
            "Events of a sink not delivered yet, by state: unread (in the stream), in_hand"
            " (read: queued, in flight or held by a pause), retrying (failed, waiting for the"
            " next attempt)",
            ["sink", "cluster", "state"],
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
        self.partition_lag = Gauge(
            "notifier_sink_partition_lag",
            "Stream entries one delivery partition of a sink has not read yet",
            ["sink", "cluster", "partition"],
            registry=r,
        )
        self.partition_pending = Gauge(
            "notifier_sink_partition_pending",
            "Entries one delivery partition has read and not acknowledged (in hand or retrying)",
            ["sink", "cluster", "partition"],
            registry=r,
        )
        self.partition_leading = Gauge(
            "notifier_sink_partition_leading",
            "1 while this process delivers one partition of a sink's events of a cluster",
            ["sink", "cluster", "partition"],
            registry=r,
        )
        self.fleet_replicas = Gauge(
            "notifier_fleet_replicas",
            "Live replicas (fresh heartbeats in Redis) as this process last saw them",
            registry=r,
        )
        self.leases_held = Gauge(
            "notifier_leases_held",
            "Leases of a kind (pollers, sinks) this process holds",
            ["kind"],
            registry=r,
        )
        self.lease_cap = Gauge(
            "notifier_lease_cap",
            "Most leases of a kind one replica may hold: ceil(leases / live replicas)",
            ["kind"],
            registry=r,
        )
        self.handovers = Counter(
            "notifier_handovers",
            "Leases this process gave to another replica to balance the fleet",
            ["kind"],
            registry=r,
        )
        self.streams = Gauge(
            "notifier_streams",
            "Live audiences (streams with at least one viewer) after the last committed poll",
            ["cluster"],
            registry=r,
        )
        self.stream_viewers = Gauge(
            "notifier_stream_viewers",
            f"Audience of the {TOP_STREAMS} largest streams after the last committed poll",
            ["cluster", "application", "stream"],
            registry=r,
        )
        self._charted: dict[str, set[tuple[str, str]]] = {}  # cluster -> streams with a series
        self.registry = registry or CollectorRegistry()
        self.registry.register(_WithoutCreated(r))

    def set_audiences(
        self, cluster: str, live: int, largest: Iterable[tuple[str, str, int]]
    ) -> None:
        """After a committed poll: ``live`` audiences, and ``largest`` as
        ``(applicationId, streamKey, viewers)``, largest first, of which the first
        ``TOP_STREAMS`` get a series; a stream that is no longer among them loses its series
        (so the number of series stays bounded however many streams come and go)."""
        self.streams.labels(cluster).set(live)
        shown: set[tuple[str, str]] = set()
        for application, stream, viewers in itertools.islice(largest, TOP_STREAMS):
            self.stream_viewers.labels(cluster, application, stream).set(viewers)
            shown.add((application, stream))
        for application, stream in self._charted.get(cluster, set()) - shown:
            self.stream_viewers.remove(cluster, application, stream)
        self._charted[cluster] = shown
