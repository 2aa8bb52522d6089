"""Every Redis key, stream and consumer-group name, in one place (docs/operations.md, Redis).

All keys of one Storm cluster carry the hash tag ``{cluster}``, so that in a Redis Cluster they
live in one slot and one script can touch them atomically.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

__all__ = [
    "HISTORY_EVERY",
    "HISTORY_STREAMS",
    "ClusterKeys",
    "replicas_key",
    "sink_group",
    "slack_pace",
]

HISTORY_EVERY = 20.0
"""Seconds between two audience samples in ``P:{C}:history``."""
HISTORY_STREAMS = 20
"""Streams per audience sample (the largest audiences)."""


def sink_group(sink: str) -> str:
    """The consumer group a sink reads every cluster stream through."""
    return f"sink:{sink}"


def replicas_key(prefix: str, kind: str) -> str:
    """Sorted set: the live replicas of one lease kind (``pollers``, ``sinks``), owner id ->
    when its heartbeat runs out (ms, Redis time); ``fleet.registry`` keeps it. Shared by every
    cluster, so not a cluster key; a one-key script reads and writes it."""
    return f"{prefix}:replicas:{kind}"


def slack_pace(prefix: str, channel: str) -> str:
    """String: when the next ``chat.postMessage`` to a Slack channel may go (ms, Redis time).

    Shared by every process, sink and cluster posting to the channel, so it is not a cluster
    key; a single-key script reads and writes it (``sinks.slack.pacer``).
    """
    return f"{prefix}:slackpace:{channel}"


def _stream_digest(application_id: str | None, stream_key: str) -> str:
    """A short fixed-length name for a stream (its key is any text the API returned)."""
    raw = json.dumps([application_id, stream_key], ensure_ascii=False).encode()
    return hashlib.sha256(raw).hexdigest()[:24]


@dataclass(frozen=True, slots=True)
class ClusterKeys:
    """The keys of one Storm cluster under one prefix."""

    prefix: str
    cluster: str

    @property
    def base(self) -> str:
        """``P:{C}``: the hash-tagged root of every key of the cluster."""
        return f"{self.prefix}:{{{self.cluster}}}"

    @property
    def events(self) -> str:
        """The public event stream, oldest first."""
        return f"{self.base}:events"

    def dlq(self, sink: str) -> str:
        """The public dead-letter stream of one sink."""
        return f"{self.base}:dlq:{sink}"

    def retries(self, sink: str) -> str:
        """Hash: stream entry id -> retry state of an event a sink is retrying."""
        return f"{self.base}:retries:{sink}"

    def sink_lease(self, sink: str) -> str:
        """String: the worker delivering this cluster's events to one sink, with a TTL."""
        return f"{self.base}:sinklease:{sink}"

    def sink_fence(self, sink: str) -> str:
        """Counter: fencing tokens of the sink lease."""
        return f"{self.base}:sinkfence:{sink}"

    def sink_layout(self, sink: str) -> str:
        """String: how many partitions deliver this cluster's events to one sink (``K``), set
        when its groups are made and changed only by ``sinks.layout`` (the flip guard: a worker
        of another K neither takes a lease nor reads)."""
        return f"{self.base}:sinklayout:{sink}"

    def sink_carry(self, sink: str) -> str:
        """Hash: what the groups of the sink's previous layout had done when K last changed
        (``from`` K, ``last:<q>`` last delivered id, ``pending:<q>`` ids not acknowledged,
        ``at`` where the new groups started): lets the new partitions skip what was delivered."""
        return f"{self.base}:sinkcarry:{sink}"

    def sink_handed(self, lane: str) -> str:
        """String: the consumer that last handed a sink lane over cleanly (its entries still
        pending are retries, safe to claim at once), with a TTL."""
        return f"{self.base}:sinkhanded:{lane}"

    def slack_incident(self, sink: str, application_id: str | None, stream_key: str) -> str:
        """String: a Slack app sink's record of a stream's latest incident message (JSON: the
        incident's id, the message ``ts``, its figures); expires a while after it is resolved."""
        return f"{self.base}:slack:{sink}:incident:{_stream_digest(application_id, stream_key)}"

    def slack_audience(self, sink: str, application_id: str | None, stream_key: str) -> str:
        """String: a Slack app sink's record of a stream's audience message (JSON: the message
        ``ts``, its start, crossings and end); expires a while after the audience ended."""
        return f"{self.base}:slack:{sink}:audience:{_stream_digest(application_id, stream_key)}"

    def slack_told(self, sink: str) -> str:
        """Sorted set: ids of the events a Slack app sink has put in a message (channel or
        thread), scored by when (ms); a redelivered batch skips them. Trimmed by age."""
        return f"{self.base}:slack:{sink}:told"

    @property
    def viewers(self) -> str:
        """Hash: viewer id -> tracked state (last record, missed polls, health)."""
        return f"{self.base}:viewers"

    @property
    def streams(self) -> str:
        """Hash: ``[applicationId, streamKey]`` (JSON) -> the state of its live audience."""
        return f"{self.base}:streams"

    @property
    def meta(self) -> str:
        """Hash: generation, sequence, epoch, polls, polled_at, commit (``detect.store``)."""
        return f"{self.base}:meta"

    @property
    def status(self) -> str:
        """Hash: the newest poll cycle, written by the leading poller after each one (``at`` ms,
        ``duration`` s, ``complete`` 1/0, ``reason``, ``events``, ``tracked``, ``streams``,
        ``owner``; ``tracked`` and ``streams`` are left as they were when the poller does not
        know them yet, ``streams`` is 0 with stream events off: ``detect.report``). What the
        status model shows; never read by the data path."""
        return f"{self.base}:status"

    @property
    def history(self) -> str:
        """List: audience samples, newest first, at most one per ``HISTORY_EVERY`` seconds of
        the wall clock (one per slot ``at // HISTORY_EVERY``) and an hour of them (JSON
        ``{"at": ms, "seq": n, "tracked": n, "streams": [[app, key, viewers], ...]}``, the top
        ``HISTORY_STREAMS`` streams, largest first). For the console's charts."""
        return f"{self.base}:history"

    def sink_state(self, sink: str) -> str:
        """Hash: what one sink's worker of this cluster last saw (``paused`` reason,
        ``last_error``, ``last_error_at`` ms, ``last_delivered_at`` ms); written at most about
        once a second and on every change of ``paused``. For the status model."""
        return f"{self.base}:sinkstate:{sink}"

    @property
    def lease(self) -> str:
        """String: ``owner:token`` of the poller leading this cluster, with a TTL."""
        return f"{self.base}:lease"

    @property
    def fence(self) -> str:
        """Counter: the last fencing token handed out."""
        return f"{self.base}:fence"
