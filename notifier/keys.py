"""Every Redis key, stream and consumer-group name, in one place (docs/operations.md, Redis).

All keys of one Storm cluster carry the hash tag ``{cluster}``, so that in a Redis Cluster they
live in one slot and one script can touch them atomically.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ClusterKeys", "sink_group"]


def sink_group(sink: str) -> str:
    """The consumer group a sink reads every cluster stream through."""
    return f"sink:{sink}"


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
    def lease(self) -> str:
        """String: ``owner:token`` of the poller leading this cluster, with a TTL."""
        return f"{self.base}:lease"

    @property
    def fence(self) -> str:
        """Counter: the last fencing token handed out."""
        return f"{self.base}:fence"
