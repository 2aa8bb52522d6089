"""How long a poll cycle takes, phase by phase, and saying so when it outruns its slot.

``notifier_poll_duration_seconds`` times the whole cycle (fetch, decode, lookup, detect, encode,
commit) and ``notifier_poll_phase_seconds`` each phase, so that operators see what a benchmark
sees. A cycle longer than ``poll_interval``, or than half the leader lease (a commit would soon
be fenced), is a warning once, with its slowest phase; once back in pace, an info line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from structlog.typing import FilteringBoundLogger

    from notifier.metrics import Metrics

__all__ = ["Pace"]


class Pace:
    """The phases of the cycle under way, and whether the last ones were slow."""

    def __init__(
        self,
        cluster: str,
        *,
        interval: float,
        lease: float,
        metrics: Metrics,
        clock: Callable[[], float],
        log: FilteringBoundLogger,
    ) -> None:
        self._cluster = cluster
        self._interval = interval
        self._lease = lease
        self._metrics = metrics
        self._clock = clock
        self._log = log
        self.phases: dict[str, float] = {}  # the current cycle's, seconds
        self._slow = False

    def start(self) -> float:
        """A cycle begins; returns the clock."""
        self.phases = {}
        return self._clock()

    def phase(self, phase: str, seconds: float) -> float:
        """Record one phase's time; returns the clock, to time the next phase from."""
        self.phases[phase] = seconds
        self._metrics.poll_phase.labels(self._cluster, phase).observe(seconds)
        return self._clock()

    def finish(self, started: float) -> float:
        """The cycle begun at ``started`` ended: observe it, warn or recover; its seconds."""
        took = self._clock() - started
        self._metrics.poll_duration.labels(self._cluster).observe(took)
        slow = took > self._interval or took > self._lease / 2
        if slow and not self._slow:
            phase, seconds = max(self.phases.items(), key=lambda kv: kv[1], default=("-", 0.0))
            self._log.warning(
                "poller.poll_slow",
                seconds=round(took, 2),
                poll_interval=self._interval,
                leader_lease=self._lease,
                slowest_phase=phase,
                phase_seconds=round(seconds, 2),
                effect="polls start late (missed slots are skipped); near the lease, a commit"
                " may be fenced",
            )
        elif not slow and self._slow:
            self._log.info("poller.poll_pace_recovered", seconds=round(took, 2))
        self._slow = slow
        return took
