"""The sink interface: an event in, an outcome out.

A sink is a small object with ``deliver(events) -> Outcome`` and ``aclose()``; ``Event``
(re-exported from ``notifier.events``) is what it is handed. The worker owns
everything else (reading, ordering, retries, dead letters), so a sink is a few dozen lines:
turn events into one request, say what the answer means.

    Delivered                  done; acknowledge
    Retry(reason, after)       try again on the schedule (not before ``after`` seconds);
                               with counted=False (rate limits) no attempt is used up
    Failed(reason)             permanent: dead-letter it
    Failed(reason, pause=True) the endpoint is gone: pause the sink, the event waits

A sink type is a ``SinkFactory``: its settings model and ``create(settings, context)``. The
``SinkContext`` is what whoever runs the sink (``notifier run``, ``replay``, ``dlq redrive``)
hands it besides its settings: the Redis client and the key names, for a sink that keeps
state of its own that must outlive a process (Slack app mode keeps the ``ts`` of its messages
there, so that a restart or a replica edits the same message). ``SinkType`` makes a factory of
a constructor that takes the settings only, ``StatefulSinkType`` of one that takes the context
too. A plugin factory written as ``create(settings)`` still loads (``registry`` adapts it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from notifier.events import Event
from notifier.keys import ClusterKeys

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Sequence

    from notifier.redis_client import AnyRedis
    from notifier.sinks.settings import SinkBaseSettings

__all__ = [
    "Batching",
    "Delivered",
    "Event",
    "Failed",
    "Outcome",
    "Retry",
    "Sink",
    "SinkContext",
    "SinkFactory",
    "SinkType",
    "StatefulSinkType",
]


@dataclass(frozen=True, slots=True)
class Delivered:
    """The receiver took it."""

    status: int | None = None


@dataclass(frozen=True, slots=True)
class Retry:
    """Worth another attempt, on the schedule, and not before ``after`` seconds if given.

    ``counted`` False is flow control (a receiver's rate limit), not a failure: it does not
    use up an attempt of the schedule.
    """

    reason: str
    status: int | None = None
    after: float | None = None
    counted: bool = True


@dataclass(frozen=True, slots=True)
class Failed:
    """Permanent: the event goes to the dead letters, or with ``pause`` the sink stops."""

    reason: str
    status: int | None = None
    pause: bool = False


Outcome = Delivered | Retry | Failed


@dataclass(frozen=True, slots=True)
class Batching:
    """How the worker groups ready events into one ``deliver`` call.

    Events with the same ``key`` (all of them if None) go together, at most ``size``, waiting
    up to ``wait`` seconds for more. Only the oldest waiting event of each viewer is ever
    ready, so a batch never holds two events of one viewer out of order.
    """

    size: int = 1
    wait: float = 0.0
    key: Callable[[Event], Hashable] | None = None


class Sink(Protocol):
    """What the worker asks of a sink."""

    @property
    def batching(self) -> Batching:
        """How to group events for ``deliver``."""
        ...

    async def deliver(self, events: Sequence[Event]) -> Outcome:
        """Deliver the events in one go; never raise for a failure, return it."""
        ...

    async def aclose(self) -> None:
        """Release connections; idempotent."""
        ...


@dataclass(frozen=True, slots=True)
class SinkContext:
    """What a sink is given besides its settings: the shared Redis and its key names.

    A sink serves every cluster, so it builds the keys of an event's cluster with ``keys``.
    """

    redis: AnyRedis
    key_prefix: str

    def keys(self, cluster: str) -> ClusterKeys:
        """The keys of one Storm cluster (``notifier.keys``)."""
        return ClusterKeys(self.key_prefix, cluster)


class SinkFactory(Protocol):
    """What a sink type provides, built in or a plugin: its settings model and a constructor."""

    @property
    def settings_model(self) -> type[SinkBaseSettings]:
        """The pydantic model of the sink's settings (with a ``type`` field)."""
        ...

    def create(self, settings: Any, context: SinkContext) -> Sink:
        """A sink for validated ``settings`` (an instance of ``settings_model``)."""
        ...


S = TypeVar("S", bound="SinkBaseSettings")


@dataclass(frozen=True, slots=True)
class SinkType(Generic[S]):
    """A ``SinkFactory`` from a settings model and a constructor taking those settings."""

    settings_model: type[S]
    constructor: Callable[[S], Sink]

    def create(self, settings: Any, context: SinkContext) -> Sink:  # noqa: ARG002 - unused
        """A sink for validated ``settings``; it keeps no state, so needs no context."""
        return self.constructor(settings)


@dataclass(frozen=True, slots=True)
class StatefulSinkType(Generic[S]):
    """A ``SinkFactory`` whose constructor takes the settings and the ``SinkContext``."""

    settings_model: type[S]
    constructor: Callable[[S, SinkContext], Sink]

    def create(self, settings: Any, context: SinkContext) -> Sink:
        """A sink for validated ``settings``, keeping its state through ``context``."""
        return self.constructor(settings, context)
