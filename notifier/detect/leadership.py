"""The lease of one cluster's poller: take it when the fleet allows, keep it, hand it over.

- **Take.** A poller that does not hold the lease tries to acquire it only while its fleet
  gate (``notifier.fleet``) says ``may_take``; with no fleet the gate is always open.
- **Keep.** While held, the lease is renewed every third of its TTL in the background,
  whatever the gate says: only a hand-over gives it back.
- **Hand over.** When the gate says ``should_give``, the poller calls ``hand_over`` between
  two polls (never during one): the newest records are saved (the poller's checkpoint, as at a
  clean stop), the lease is released, and the poller stands by; it may lead again later.
- **One change at a time.** Acquiring, renewing, handing over and releasing take turns (a
  lock), so a renewal in flight can never bring back a lease that was just handed over.
- **Said once.** Leading is ``poller.leading``; losing the lease ``poller.following``
  (warning); a standby says once whom it stands by for (``poller.standing_by``), again only
  after it has led.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from notifier._aio import wait_event
from notifier.redis_client import REDIS_ERRORS

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from structlog.typing import FilteringBoundLogger

    from notifier.detect.outages import Outages
    from notifier.fleet import Gate
    from notifier.lease import Lease
    from notifier.metrics import Metrics

__all__ = ["Leadership"]


class Leadership:
    """The lease of one poller and the gate that says when to take or give it (module doc)."""

    def __init__(
        self,
        lease: Lease,
        gate: Gate,
        *,
        cluster: str,
        ttl: float,
        metrics: Metrics,
        outages: Outages,
        log: FilteringBoundLogger,
    ) -> None:
        """``ttl``: the lease's TTL in seconds (it is renewed every third of it)."""
        self._lease = lease
        self._gate = gate
        self._cluster = cluster
        self._ttl = ttl
        self._metrics = metrics
        self._outages = outages
        self._log = log
        self._lock = asyncio.Lock()
        self._leading = False
        self._said_standby = False

    @property
    def held(self) -> bool:
        """True while the last acquire or renewal succeeded."""
        return self._lease.held

    @property
    def value(self) -> str | None:
        """``owner:token`` of the lease while held (what a commit is fenced with)."""
        return self._lease.value

    def should_give(self) -> bool:
        """The lease is held and the fleet wants it elsewhere: hand it over before polling."""
        return self._lease.held and self._gate.should_give()

    async def try_lead(self) -> bool:
        """Renew the lease if held; else take it if the gate allows and nobody holds it."""
        async with self._lock:
            if not self._lease.held and not self._gate.may_take():
                if not self._said_standby:
                    await self._stand_by(
                        effect="polls when the fleet gives this replica the cluster"
                    )
                return False
            try:
                leading = await self._lease.acquire()
            except REDIS_ERRORS as exc:
                self._outages.redis(ok=False, error=exc)
                return False
            self._outages.redis(ok=True)
            self._set_leading(leading=leading)
            if not leading and not self._said_standby:
                await self._stand_by(effect="polls when the holder stops or its lease runs out")
            return leading

    async def keep(self, stop: asyncio.Event, on_change: Callable[[], None]) -> None:
        """Renew (or try to take) the lease every third of its TTL until ``stop``;
        ``on_change`` when the lease held before a renewal is not the one held after it
        (someone else led in between: nothing cached can be trusted)."""
        while not await wait_event(stop, self._ttl / 3):
            was = self._lease.value
            await self.try_lead()
            if was is not None and self._lease.value != was:
                on_change()

    async def hand_over(self, save: Callable[[], Awaitable[None]]) -> None:
        """Give the lease to the fleet: ``save`` (the checkpoint, while still holding it),
        release, stand by, tell the gate."""
        async with self._lock:
            if not self._lease.held:
                return
            self._log.info("poller.handing_over", lease=self._lease.value)
            await save()
            await self._release()
            self._metrics.leading.labels(self._cluster).set(0)
            self._leading = False
            self._said_standby = True  # (the line below says it)
            self._log.info(
                "poller.handed_over",
                effect="stands by: the fleet gives the cluster to another replica",
            )
            self._gate.handed_over()

    async def give_up(self) -> None:
        """Release the lease (a clean stop), so a replica takes over without waiting."""
        async with self._lock:
            await self._release()

    def lost(self, reason: str) -> None:
        """A commit found the lease gone: stop believing we hold it, and say so."""
        self._lease.forget()
        self._set_leading(leading=False, reason=reason)

    async def _release(self) -> None:
        try:
            await self._lease.release()
        except REDIS_ERRORS as exc:
            self._log.info("poller.lease_not_released", error=str(exc))

    async def _stand_by(self, *, effect: str) -> None:
        """Say once that another replica leads or should (again only after this one led)."""
        self._said_standby = True
        try:
            holder = await self._lease.holder()
        except REDIS_ERRORS:
            holder = None
        self._log.info("poller.standing_by", holder=holder, effect=effect)

    def _set_leading(self, *, leading: bool, reason: str | None = None) -> None:
        self._metrics.leading.labels(self._cluster).set(1 if leading else 0)
        if leading != self._leading:
            self._leading = leading
            if leading:
                self._said_standby = False
                self._log.info("poller.leading", lease=self._lease.value)
            else:
                self._log.warning("poller.following", reason=reason or "another replica leads")
