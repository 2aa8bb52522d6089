"""Storm and Redis outages of one cluster's poller: said once when they start, once when they end.

A poll that cannot reach Storm fails only when ``poll_budget`` runs out (its requests are
retried until then), which would leave an operator reading retry lines for half a minute. So the
poller also watches the poll in flight (``StormClient.failing``) and the outage is said as soon
as it is clear:

| before this poll                          | ``poller.storm_unavailable`` (warning) when      |
|-------------------------------------------|--------------------------------------------------|
| nothing yet (the first poll of a process) | its first request fails                          |
| the last poll was complete                | a request failed ``FAILING_ATTEMPTS`` times in a |
|                                           | row, or the poll ends incomplete                 |
| Storm already said unavailable            | never again until a poll is complete             |

A complete poll after an outage is ``poller.storm_recovered`` (info). After a good poll, a
request that a retry or two mends (a stray 5xx) says nothing; only the first poll of a process
turns such a hiccup into an outage line and its recovery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from notifier.redis_client import redis_reason

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from notifier.storm.client import Failing

__all__ = ["FAILING_ATTEMPTS", "Outages"]

FAILING_ATTEMPTS = 3
"""Failed attempts of one request, in a row, that make a poll after a good one an outage."""


class Outages:
    """The Storm and Redis states of one poller, and their log lines (module doc)."""

    def __init__(self, log: FilteringBoundLogger) -> None:
        self._log = log
        self._storm_ok: bool | None = None  # None: no poll has ended yet
        self._redis_ok: bool | None = None  # as last said in the log
        self._redis_answers = True  # the last Redis call of the poller or its lease keeper
        self.holding = False  # polls wait to be written: Redis is back once it takes them

    def storm_failing(self, failing: Failing) -> None:
        """A request of the poll in flight is failing: say the outage now if the table says so."""
        if self._storm_ok is False:
            return
        if self._storm_ok is None or failing.attempts >= FAILING_ATTEMPTS:
            self._unavailable(
                str(failing), still="retrying until the poll budget runs out", reason=failing.kind
            )

    def storm(self, *, ok: bool, error: str | None = None, reason: str | None = None) -> None:
        """A poll ended, complete (``ok``) or not (``error`` says why, ``reason`` its kind)."""
        if ok and self._storm_ok is False:
            self._log.info("poller.storm_recovered")
        elif not ok and self._storm_ok is not False:
            self._unavailable(error or "unknown", still="retried at the next poll", reason=reason)
        self._storm_ok = ok

    def redis(self, *, ok: bool, error: BaseException | None = None) -> None:
        """A Redis call of the poller succeeded, or failed with ``error``. While polls wait to
        be written (``holding``), a call that succeeds (a lease renewal) says nothing yet: Redis
        counts as recovered once it takes them, which a Redis that refuses writes does not."""
        self._redis_answers = ok
        if ok and self.holding:
            return
        if ok and self._redis_ok is False:
            self._log.info("poller.redis_recovered")
        elif not ok and self._redis_ok is not False:
            reason = redis_reason(error) if error else "unknown"
            self._log.warning("poller.redis_unavailable", error=reason)
        self._redis_ok = ok

    @property
    def redis_answers(self) -> bool:
        """The last Redis call of the poller or its lease keeper succeeded."""
        return self._redis_answers

    def _unavailable(self, error: str, *, still: str, reason: str | None = None) -> None:
        self._storm_ok = False
        self._log.warning(
            "poller.storm_unavailable",
            reason=reason or "unavailable",
            error=error,
            effect=f"no poll is complete, so nothing is detected or emitted; {still}",
        )
