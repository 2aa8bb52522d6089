"""The Prometheus exposition of ``notifier.metrics.Metrics``."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import DuplicateTimeseries

from notifier.metrics import TOP_STREAMS, Metrics


def _used() -> Metrics:
    """Metrics with a child of every counter and histogram in use."""
    metrics = Metrics()
    metrics.polls.labels("eu-1", "committed").inc()
    metrics.poll_duration.labels("eu-1").observe(0.2)
    metrics.poll_phase.labels("eu-1", "fetch").observe(0.1)
    metrics.events.labels("eu-1", "viewer.connected").inc(3)
    metrics.deliveries.labels("hooks", "delivered").inc()
    metrics.delivery_duration.labels("hooks").observe(0.01)
    metrics.viewers.labels("eu-1").set(3)
    return metrics


def test_the_exposition_has_no_created_series() -> None:
    """Counters and histograms export their samples but no ``_created`` series."""
    text = generate_latest(_used().registry).decode()
    assert "_created" not in text
    assert 'notifier_polls_total{cluster="eu-1",outcome="committed"} 1.0' in text
    assert 'notifier_events_total{cluster="eu-1",type="viewer.connected"} 3.0' in text
    assert 'notifier_poll_duration_seconds_count{cluster="eu-1"} 1.0' in text
    assert 'notifier_delivery_duration_seconds_bucket{le="0.01",sink="hooks"} 1.0' in text
    assert 'notifier_viewers{cluster="eu-1"} 3.0' in text


def test_sample_values_read_through_the_registry() -> None:
    """``registry.get_sample_value`` (what the tests and tools read) still sees every series."""
    metrics = _used()
    value = metrics.registry.get_sample_value
    assert value("notifier_polls_total", {"cluster": "eu-1", "outcome": "committed"}) == 1
    assert value("notifier_delivery_duration_seconds_count", {"sink": "hooks"}) == 1
    assert value("notifier_polls_created", {"cluster": "eu-1", "outcome": "committed"}) is None


def test_metrics_can_share_a_registry_but_not_their_names() -> None:
    """A registry passed in exposes the metrics beside its own; a second ``Metrics`` in the
    same registry is refused, as two collectors of one name would be."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.polls.labels("eu-1", "complete").inc()
    assert (
        registry.get_sample_value(
            "notifier_polls_total", {"cluster": "eu-1", "outcome": "complete"}
        )
        == 1
    )
    with pytest.raises(DuplicateTimeseries):
        Metrics(registry)


def test_stream_audiences_keep_a_series_for_the_largest_streams_only() -> None:
    """``set_audiences`` sets the live audiences and one series per stream among the
    ``TOP_STREAMS`` largest; a stream that drops out of them loses its series."""
    metrics = Metrics()
    value = metrics.registry.get_sample_value
    many = [("app", f"s{n}", 1000 - n) for n in range(TOP_STREAMS + 5)]
    metrics.set_audiences("eu-1", len(many), many)
    assert value("notifier_streams", {"cluster": "eu-1"}) == len(many)
    labels = {"cluster": "eu-1", "application": "app"}
    assert value("notifier_stream_viewers", {**labels, "stream": "s0"}) == 1000
    assert value("notifier_stream_viewers", {**labels, "stream": f"s{TOP_STREAMS}"}) is None
    metrics.set_audiences("eu-1", 2, [("app", "new", 7), ("app", "s1", 999)])
    assert value("notifier_stream_viewers", {**labels, "stream": "new"}) == 7
    assert value("notifier_stream_viewers", {**labels, "stream": "s0"}) is None
    text = generate_latest(metrics.registry).decode()
    assert text.count("notifier_stream_viewers{") == 2
