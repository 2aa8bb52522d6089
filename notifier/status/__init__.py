"""What the service is doing, read from Redis: one model for ``/api/status``, the console at
``/`` and ``notifier status``.

``read_status`` reads it (``reader``: the round trips), ``build`` decides what it means (pure),
``model`` is its shape (the JSON of ``docs/status.md``), ``table`` prints it in a terminal.
"""

from notifier.status.build import cluster_problem, problem_lines, sink_problem
from notifier.status.model import (
    AudiencePoint,
    ClusterStatus,
    EventLine,
    Incident,
    LastPoll,
    PartitionLane,
    SinkLane,
    SinkStatus,
    Status,
    StreamStatus,
)
from notifier.status.reader import StatusUnavailable, read_status

__all__ = [
    "AudiencePoint",
    "ClusterStatus",
    "EventLine",
    "Incident",
    "LastPoll",
    "PartitionLane",
    "SinkLane",
    "SinkStatus",
    "Status",
    "StatusUnavailable",
    "StreamStatus",
    "cluster_problem",
    "problem_lines",
    "read_status",
    "sink_problem",
]
