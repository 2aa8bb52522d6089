"""Sharing the leases of a kind (cluster pollers, sink workers) among the live replicas.

- ``share``: who should hold which lease, a pure function of the names (rendezvous hashing,
  capped at ``ceil(L / N)`` per replica);
- ``registry``: the live replicas, a heartbeat in Redis with a TTL;
- ``balancer``: the rounds that turn both into a ``Gate`` per lease, which the lease's own
  loop consults: take it now? hand it over now?
"""

from notifier.fleet.balancer import HYSTERESIS, OPEN, Fleet, Gate
from notifier.fleet.registry import Registry, replicas_key
from notifier.fleet.share import cap, plan

__all__ = ["HYSTERESIS", "OPEN", "Fleet", "Gate", "Registry", "cap", "plan", "replicas_key"]
