"""Balanced leadership: which leases this replica should take, and which it should give away.

Every ``ttl / 3`` seconds a round, per kind of lease (``pollers``, ``sinks``):

1. beat in the kind's registry, which returns the live replicas (``registry``);
2. read who holds each lease (one GET per lease key, in a pipeline that is not a transaction:
   on a Redis Cluster the keys live in different slots);
3. compute the kind's share (``share.plan``) and decide, per lease:

| gate            | when                                                                  |
|-----------------|-----------------------------------------------------------------------|
| ``may_take``    | the share gives the lease to this replica; or the lease has been free |
|                 | for 2 rounds in a row and this replica holds fewer than the cap (the  |
|                 | lease of a replica that died and whose heartbeat has not run out yet, |
|                 | or of a planned owner that does not take it)                          |
| ``should_give`` | this replica holds the lease, the share has given it to another live  |
|                 | replica for 2 rounds in a row (hysteresis: no ping-pong), and moving  |
|                 | it helps: this replica holds more than the cap, or at least two more  |
|                 | leases than that replica; and that replica did not let it lie free    |
|                 | for 2 rounds (it would not take it back either)                       |

A lease stays where it is while moving it would not improve the balance: a holder within the
cap keeps its lease through another replica's restart or pause, instead of handing it back and
forth (each hand-over is a short pause in the work). A join thus moves the leases the new cap
sheds, and those that even out a difference of two or more.

The gates only advise: the lease itself (``notifier.lease``) stays the one guard against two
holders, and its holder's own loop asks its gate between two units of work (a poll, a batch of
deliveries), then finishes what it has in hand, saves, releases and calls ``handed_over``.

Until the first round, and through a Redis outage, the gates keep their last answer; with no
answer yet they say "take" and never "give", as before there was a fleet. A replica alone is
given every lease, so a single replica works exactly as it did.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import structlog

from notifier._aio import wait_event
from notifier.fleet.registry import Registry
from notifier.fleet.share import cap, plan, weight
from notifier.lease import owner_of
from notifier.metrics import Metrics
from notifier.redis_client import REDIS_ERRORS, redis_reason

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable, Mapping

    from notifier.redis_client import AnyRedis

__all__ = ["HYSTERESIS", "OPEN", "Fleet", "Gate"]

HYSTERESIS = 2
"""Rounds in a row a lease must be free (to take it off-plan) or planned elsewhere (to give it)."""

log = structlog.get_logger("notifier.fleet")


class Gate:
    """One lease as the fleet sees it, consulted by the holder's own loop.

    This base class is the open gate (``OPEN``): always take, never give. A lone ``Poller`` or
    ``SinkWorker`` uses it; tests subclass it to steer a hand-over.
    """

    def may_take(self) -> bool:
        """Try to acquire this lease now?"""
        return True

    def should_give(self) -> bool:
        """Hand this held lease over now (finish the work in hand, save, release)?"""
        return False

    def handed_over(self) -> None:
        """The holder released the lease to balance the fleet."""


OPEN: Final = Gate()
"""The gate of a component outside any fleet."""


class _LeaseGate(Gate):
    """A lease of a kind, decided by the fleet's rounds (module doc)."""

    def __init__(self, kind: _Kind, name: str) -> None:
        self._kind = kind
        self.name = name
        self.take: bool | None = None  # None: no round has decided yet
        self.give = False
        self.free_rounds = 0  # rounds in a row nobody held it
        self.elsewhere_rounds = 0  # rounds in a row the share gave it to another replica
        self.passed_over: str | None = None  # the planned owner that let it lie free

    def may_take(self) -> bool:
        return True if self.take is None else self.take

    def should_give(self) -> bool:
        return self.give

    def handed_over(self) -> None:
        self.give = False
        self.take = False
        self.elsewhere_rounds = 0
        self._kind.handed_over()

    def __repr__(self) -> str:
        return f"<Gate {self._kind.name}/{self.name} take={self.take} give={self.give}>"


@dataclass(slots=True, eq=False)
class _Kind:
    """The leases of one kind, their gates and the replicas that share them."""

    name: str
    registry: Registry
    keys: dict[str, str]  # lease name -> its Redis key
    metrics: Metrics
    gates: dict[str, _LeaseGate] = field(default_factory=dict)
    live: tuple[str, ...] = ()

    def handed_over(self) -> None:
        self.metrics.handovers.labels(self.name).inc()


class Fleet:
    """This replica's part in sharing the leases of every kind with the live replicas."""

    def __init__(
        self,
        redis: AnyRedis,
        prefix: str,
        owner: str,
        *,
        ttl: float,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """:param ttl: seconds a heartbeat stays fresh (the lease TTL: a dead replica's leases
            are then taken within about one TTL and a round); a round runs every ``ttl / 3``.
        :param clock: monotonic seconds, for the schedule of the rounds."""
        self._redis = redis
        self._prefix = prefix
        self._owner = owner
        self._ttl = ttl
        self._metrics = metrics or Metrics()
        self._clock = clock
        self._kinds: dict[str, _Kind] = {}
        self._redis_ok: bool | None = None
        self._started = False
        self._log = log.bind(owner=owner)
        self.live: tuple[str, ...] = ()
        """Every live replica of any kind, sorted, as the last round saw them."""

    def register(self, kind: str, leases: Mapping[str, str]) -> dict[str, Gate]:
        """The gates of ``leases`` (lease name -> its Redis key, whose value is ``owner:token``)
        of one ``kind`` (``pollers``, ``sinks``); called before ``start``."""
        if kind in self._kinds:
            raise ValueError(f"lease kind {kind!r} is already registered")
        registry = Registry(self._redis, self._prefix, kind, self._owner, ttl=self._ttl)
        entry = _Kind(kind, registry, dict(leases), self._metrics)
        entry.gates = {name: _LeaseGate(entry, name) for name in leases}
        self._kinds[kind] = entry
        return dict(entry.gates)

    async def start(self) -> None:
        """One heartbeat and one round, so that the gates answer from the start (a Redis
        failure is logged and leaves them open, as before any round)."""
        await self.round()
        self._started = True

    async def run(self, stop: asyncio.Event) -> None:
        """A round every ``ttl / 3`` until ``stop``; then leave every registry (a clean stop:
        the others share the leases at once). Redis failures are logged, never raised."""
        period = self._ttl / 3
        try:
            if not self._started:
                await self.round()
            due = self._clock() + period
            while not await wait_event(stop, max(due - self._clock(), 0.0)):
                await self.round()
                due = max(due + period, self._clock())
        finally:
            await self._leave()

    async def round(self) -> None:
        """One round now (``run`` calls it on schedule): observe every kind, then decide; a
        Redis failure half-way changes no decision, and is logged once, not raised."""
        if not self._kinds:
            return
        try:
            seen = [(kind, *await self._observe(kind)) for kind in self._kinds.values()]
        except REDIS_ERRORS as exc:
            if self._redis_ok is not False:
                self._log.warning(
                    "fleet.redis_unavailable",
                    error=redis_reason(exc),
                    effect="leases are taken and kept as the last round decided",
                )
            self._redis_ok = False
            return
        if self._redis_ok is False:
            self._log.info("fleet.redis_recovered")
        self._redis_ok = True
        for kind, live, holders in seen:
            self._decide(kind, live, holders)
        live = tuple(sorted({owner for kind, *_ in seen for owner in kind.live}))
        if live != self.live:
            self.live = live
            self._log.info("fleet.replicas", count=len(live), replicas=list(live))
        self._metrics.fleet_replicas.set(len(live))

    async def _observe(self, kind: _Kind) -> tuple[tuple[str, ...], dict[str, str | None]]:
        """The live replicas of a kind (this one among them) and who holds each lease."""
        live = await kind.registry.beat()
        if self._owner not in live:  # (only a heartbeat shorter than the script's run)
            live = tuple(sorted((*live, self._owner)))
        names = list(kind.keys)
        values: list[bytes | str | None] = []
        if names:
            pipe = self._redis.pipeline(transaction=False)
            for name in names:
                pipe.get(kind.keys[name])
            values = await pipe.execute()
        holders = {
            name: None if value is None else owner_of(_text(value))
            for name, value in zip(names, values, strict=True)
        }
        return live, holders

    def _decide(self, kind: _Kind, live: tuple[str, ...], holders: dict[str, str | None]) -> None:
        """Set every gate of a kind from one round's view (the table of the module doc)."""
        me = self._owner
        kind.live = live
        share = plan(list(kind.keys), live)
        most = cap(len(kind.keys), len(live))
        mine = {name for name, holder in holders.items() if holder == me}
        planned = {name for name, owner in share.items() if owner == me}
        room = most - len(mine | planned)
        load = Counter(holder for holder in holders.values() if holder is not None)
        for name, gate in kind.gates.items():
            owner = share[name]
            gate.free_rounds = gate.free_rounds + 1 if holders[name] is None else 0
            gate.elsewhere_rounds = 0 if owner == me else gate.elsewhere_rounds + 1
            if gate.passed_over != owner:
                gate.passed_over = None  # the share moved on
            if gate.free_rounds >= HYSTERESIS and owner != me:
                gate.passed_over = owner
            helps = len(mine) > most or load[owner] + 2 <= len(mine)
            gate.give = (
                name in mine
                and helps
                and gate.elsewhere_rounds >= HYSTERESIS
                and owner != gate.passed_over
            )
            gate.take = owner == me
        free = [
            gate
            for name, gate in kind.gates.items()
            if name not in planned and gate.free_rounds >= HYSTERESIS
        ]
        free.sort(key=lambda gate: (-weight(me, gate.name), gate.name))  # replicas differ here
        for gate in free[: max(room, 0)]:
            gate.take = True
        self._metrics.leases_held.labels(kind.name).set(len(mine))
        self._metrics.lease_cap.labels(kind.name).set(most)

    async def _leave(self) -> None:
        for kind in self._kinds.values():
            try:
                await kind.registry.leave()
            except REDIS_ERRORS as exc:
                self._log.info("fleet.leave_failed", kind=kind.name, error=redis_reason(exc))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
