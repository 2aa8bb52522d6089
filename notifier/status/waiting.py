"""What waits for a sink, by state: one definition for the metric and the status model.

``notifier_sink_waiting{sink,cluster,state}`` (set by the endpoint at scrape time) and a
lane of ``/api/status`` (``lag``, ``in_hand``, ``retrying``) are both made by ``Waiting.of``
from the same Redis figures, so the two cannot disagree about a slow receiver. Before it,
``notifier_sink_lag`` was all there was: it counts only what a sink has not *read*, and stays
0 while hundreds of read events wait for a receiver that cannot keep up.

An event of a lane that is not delivered yet is in one of three states:

- ``unread``: in the stream, not read by the lane's group yet. Each partition reads the whole
  stream, so the lane's figure is its furthest-behind partition's (``XINFO GROUPS`` lag);
  ``None`` when any partition's cannot be said (no group yet, or the stream was trimmed past
  what it had read). This is ``notifier_sink_lag`` and the status's ``lag``.
- ``in_hand``: read, not acknowledged, and not failed yet: held by the worker's schedule
  (bounded by its backlog), in flight, held by a pause, or delivered with its acknowledgement
  not flushed yet (a few milliseconds).
- ``retrying``: read and failed at least once, waiting for (or in) its next attempt: the
  saved retry states, ``P:{C}:retries:<sink>``.

``in_hand`` is ``pending`` (read and not acknowledged, summed over the partitions: the
status's ``pending``) less the retry states, never below 0: while a sink's ``partitions``
change, a retry state can outlive one partition's acknowledgement until the partition that
owns the event reads it. Otherwise ``pending == in_hand + retrying``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["STATES", "Waiting"]

STATES: Final = ("unread", "in_hand", "retrying")
"""The ``state`` label values of ``notifier_sink_waiting``."""


@dataclass(frozen=True, slots=True)
class Waiting:
    """One lane's undelivered events by state (see the module docstring)."""

    unread: int | None
    in_hand: int
    retrying: int

    @classmethod
    def of(cls, lags: Iterable[int | None], pending: Iterable[int], retrying: int) -> Waiting:
        """From the partitions' lags and pending counts and the sink's retry states."""
        known = list(lags)
        unread = None if not known or None in known else max(x for x in known if x is not None)
        return cls(unread, max(sum(pending) - retrying, 0), retrying)

    def by_state(self) -> dict[str, int | None]:
        """``{"unread": ..., "in_hand": ..., "retrying": ...}``, the metric's series."""
        return {"unread": self.unread, "in_hand": self.in_hand, "retrying": self.retrying}
